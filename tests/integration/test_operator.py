"""The operator against the real control plane: children, readiness, rollouts, drift, deletion, restarts."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from localoperator import OperatorProcess
from tests.conftest import exists, wait_for

pytestmark = pytest.mark.cluster

G, V, P = "modeldeploy.io", "v1alpha1", "modeldeployments"


def mdep(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{G}/{V}", "kind": "ModelDeployment", "metadata": {"name": name},
        "spec": {"model": {"image": "registry.example/room-price:v1", "bento": "room_price:v1"}, "replicas": 2,
                 "rollout": {"strategy": "Rolling"}},
    }
    body["spec"].update(copy.deepcopy(spec))
    if body["spec"].get("autoscaling"):  # the HPA sets the count: replicas with autoscaling is refused
        body["spec"].pop("replicas", None)
    return body


class Cluster:
    def __init__(self, api: client.ApiClient, ns: str) -> None:
        self.ns = ns
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.autoscaling = client.AutoscalingV2Api(api)
        self.policy = client.PolicyV1Api(api)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(G, V, self.ns, P, body)  # type: ignore[no-any-return]

    def get(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(G, V, self.ns, P, name)  # type: ignore[no-any-return]

    def patch(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(G, V, self.ns, P, name, {"spec": spec})

    def condition(self, name: str, type_: str) -> str | None:
        for c in self.get(name).get("status", {}).get("conditions", []):
            if c["type"] == type_:
                return str(c["status"])
        return None

    def healthy(self, name: str) -> bool:
        st = self.get(name).get("status", {})
        return st.get("phase") == "Healthy" and self.condition(name, "Ready") == "True"

    def deployment(self, name: str) -> client.V1Deployment | None:
        try:
            return self.apps.read_namespaced_deployment(name, self.ns)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def events(self, name: str) -> list[client.CoreV1Event]:
        return [e for e in self.core.list_namespaced_event(self.ns).items
                if e.involved_object.name == name and e.involved_object.kind == "ModelDeployment"]


@pytest.fixture
def k(api_client: client.ApiClient, namespace: str, operator: OperatorProcess) -> Cluster:
    return Cluster(api_client, namespace)


def test_create_makes_children_and_reaches_ready(k: Cluster) -> None:
    k.create(mdep("price"))
    wait_for(lambda: k.healthy("price"), 60, what="ModelDeployment Healthy")
    st = k.get("price")["status"]
    assert st["readyReplicas"] == 2 and st["replicas"] == 2
    assert st["stable"]["image"] == "registry.example/room-price:v1" and st["stable"]["bento"] == "room_price:v1"
    assert st["observedGeneration"] == 1
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "Ready": "True", "Available": "True", "Progressing": "False", "Degraded": "False"}
    dep = k.deployment("price")
    assert dep is not None and dep.spec.replicas == 2
    assert dep.metadata.owner_references[0].kind == "ModelDeployment"
    assert dep.spec.template.spec.containers[0].security_context.run_as_non_root is True
    svc = k.core.read_namespaced_service("price", k.ns)
    assert svc.spec.selector == {"modeldeploy.io/name": "price"}
    assert svc.metadata.labels["app.kubernetes.io/managed-by"] == "modeldeploy"
    k.policy.read_namespaced_pod_disruption_budget("price", k.ns)  # replicas > 1
    pods = k.core.list_namespaced_pod(k.ns, label_selector="modeldeploy.io/name=price").items
    assert len(pods) == 2 and all(p.status.phase == "Running" for p in pods)
    # Events are posted in the background after the status write: wait for them.
    wait_for(lambda: {"Created", "PhaseHealthy"} <= {e.reason for e in k.events("price")}, 10,
             what="the Created and PhaseHealthy Events")
    created = next(e.message for e in k.events("price") if e.reason == "Created")
    assert "Deployment price" in created and "Service price" in created and "PodDisruptionBudget price" in created
    # The scale subresource works (kubectl scale mdep/price --replicas=3).
    scale = k.custom.get_namespaced_custom_object_scale(G, V, k.ns, P, "price")
    assert scale["status"]["replicas"] == 2
    assert scale["status"]["selector"] == "modeldeploy.io/name=price,modeldeploy.io/track=stable"


def test_image_change_rolls_the_deployment(k: Cluster) -> None:
    k.create(mdep("roll"))
    wait_for(lambda: k.healthy("roll"), 60, what="Healthy v1")
    k.patch("roll", {"model": {"image": "registry.example/room-price:v2", "bento": "room_price:v2"}})

    def rolled() -> bool:
        st = k.get("roll")["status"]
        return st.get("stable", {}).get("image", "").endswith(":v2") and k.healthy("roll")

    wait_for(rolled, 60, what="stable at v2 and Healthy")
    dep = k.deployment("roll")
    assert dep is not None and dep.spec.template.spec.containers[0].image.endswith(":v2")
    pods = k.core.list_namespaced_pod(k.ns, label_selector="modeldeploy.io/name=roll").items
    wait_for(lambda: all(p.spec.containers[0].image.endswith(":v2") for p in
                         k.core.list_namespaced_pod(k.ns, label_selector="modeldeploy.io/name=roll").items),
             60, what="old pods replaced")
    st = k.get("roll")["status"]
    assert st["history"][0]["revision"]["image"].endswith(":v1")
    assert st["observedGeneration"] == 2
    del pods


def test_drift_is_corrected(k: Cluster) -> None:
    k.create(mdep("drift"))
    wait_for(lambda: k.healthy("drift"), 60, what="Healthy")
    # A child deleted by hand comes back.
    k.core.delete_namespaced_service("drift", k.ns)
    wait_for(lambda: exists(lambda: k.core.read_namespaced_service("drift", k.ns)), 30, what="Service restored")
    # A child edited by hand is put back.
    k.apps.patch_namespaced_deployment("drift", k.ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "model", "image": "someone/else:1"}]}}}})

    def image_restored() -> bool:
        dep = k.deployment("drift")
        return dep is not None and dep.spec.template.spec.containers[0].image == "registry.example/room-price:v1"

    wait_for(image_restored, 30, what="Deployment image restored")
    # And a deleted Deployment is recreated.
    k.apps.delete_namespaced_deployment("drift", k.ns)
    wait_for(lambda: k.deployment("drift") is not None, 30, what="Deployment recreated")
    wait_for(lambda: k.healthy("drift"), 60, what="Healthy again")


def test_delete_removes_children(k: Cluster) -> None:
    k.create(mdep("gone", autoscaling={"minReplicas": 2, "maxReplicas": 4}))
    wait_for(lambda: k.healthy("gone"), 60, what="Healthy")
    assert k.autoscaling.read_namespaced_horizontal_pod_autoscaler("gone", k.ns).spec.max_replicas == 4
    k.custom.delete_namespaced_custom_object(G, V, k.ns, P, "gone")
    wait_for(lambda: k.deployment("gone") is None, 60, what="Deployment garbage-collected")
    wait_for(lambda: not exists(lambda: k.core.read_namespaced_service("gone", k.ns)), 60, what="Service gone")
    wait_for(lambda: not exists(lambda: k.autoscaling.read_namespaced_horizontal_pod_autoscaler("gone", k.ns)),
             60, what="HPA gone")
    wait_for(lambda: not k.core.list_namespaced_pod(k.ns, label_selector="modeldeploy.io/name=gone").items,
             60, what="pods gone")


def test_autoscaling_hpa_owns_replicas(k: Cluster) -> None:
    k.create(mdep("auto", replicas=None, autoscaling={"minReplicas": 3, "maxReplicas": 6}))
    # The real HPA controller raises the Deployment to minReplicas; the operator must not fight it.
    wait_for(lambda: (d := k.deployment("auto")) is not None and d.spec.replicas == 3, 60,
             what="HPA scaled to 3")
    wait_for(lambda: k.healthy("auto") and k.get("auto")["status"]["readyReplicas"] == 3, 60, what="3 ready")
    dep = k.deployment("auto")
    assert dep is not None
    managers = {f.manager for f in dep.metadata.managed_fields or []}
    assert "modeldeploy" in managers
    assert k.deployment("auto").spec.replicas == 3  # type: ignore[union-attr]


def test_a_missing_secret_is_left_to_the_pods(k: Cluster) -> None:
    """The operator does not read the Secrets a model references (that needed `get` on every Secret in the
    cluster): the Deployment is created as specified, and a missing Secret shows on its pods
    (CreateContainerConfigError) and, through the Deployment, as a rollout that makes no progress."""
    env = [{"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "model-token", "key": "token"}}}]
    k.create(mdep("secretive", model={"image": "registry.example/room-price:v1", "env": env,
                                      "imagePullSecrets": ["no-such-regcred"]}))
    wait_for(lambda: k.deployment("secretive") is not None, 30, what="Deployment created")
    dep = k.deployment("secretive")
    assert dep is not None
    container = dep.spec.template.spec.containers[0]
    assert [e.value_from.secret_key_ref.name for e in container.env if e.name == "API_TOKEN"] == ["model-token"]
    assert k.get("secretive").get("status", {}).get("phase") != "Degraded"


def test_missing_service_account_degrades_then_recovers(k: Cluster) -> None:
    k.create(mdep("accounted", model={"image": "registry.example/room-price:v1", "serviceAccountName": "model-sa"}))

    def degraded() -> bool:
        st = k.get("accounted").get("status", {})
        return st.get("phase") == "Degraded" and k.condition("accounted", "Degraded") == "True"

    wait_for(degraded, 30, what="Degraded")
    st = k.get("accounted")["status"]
    assert "model-sa" in st["message"] and "does not exist" in st["message"]
    assert k.deployment("accounted") is None  # nothing created whose pods the ReplicaSet could not create
    # Events are posted after the status write and the plan's other writes: wait for them too.
    warn = wait_for(lambda: [e for e in k.events("accounted") if e.type == "Warning"], 10, what="a Warning Event")
    assert "model-sa" in warn[0].message
    k.core.create_namespaced_service_account(k.ns, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="model-sa")))
    wait_for(lambda: k.healthy("accounted"), 60, what="recovered to Healthy after the ServiceAccount appeared")


def test_restart_makes_no_duplicates_and_no_writes(
    k: Cluster, operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory, kubeconfig: str
) -> None:
    k.create(mdep("steady"))
    wait_for(lambda: k.healthy("steady"), 60, what="Healthy")
    before = {d.metadata.name: d.metadata.resource_version
              for d in k.apps.list_namespaced_deployment(k.ns).items}
    svc_rv = k.core.read_namespaced_service("steady", k.ns).metadata.resource_version
    md_rv = k.get("steady")["metadata"]["resourceVersion"]
    # Other tests' namespaces may still be terminating; their objects would legitimately cause
    # status writes. Wait until only ours is left, so every write counted below would be ours.
    wait_for(lambda: [n.metadata.name for n in k.core.list_namespace().items if n.metadata.name.startswith("t-")]
             == [k.ns], 120, what="other test namespaces gone")
    operator.stop()
    operator.start()
    # Several resyncs (every 3 s) pass with the restarted operator: it reconciles, and writes nothing.
    wait_for(lambda: operator.counter('modeldeploy_reconciles_total{result="ok"}') >= 4, 30,
             what="four reconciles after the restart")
    assert operator.writes() == 0, operator.metrics()
    after = {d.metadata.name: d.metadata.resource_version for d in k.apps.list_namespaced_deployment(k.ns).items}
    assert after == before
    assert k.core.read_namespaced_service("steady", k.ns).metadata.resource_version == svc_rv
    assert k.get("steady")["metadata"]["resourceVersion"] == md_rv
    assert len(k.apps.list_namespaced_deployment(k.ns).items) == 1
    # kopf wrote nothing onto our object either (no finalizers, no annotations).
    meta = k.get("steady")["metadata"]
    assert not meta.get("finalizers")
    assert not [a for a in meta.get("annotations", {}) if "kopf" in a]
