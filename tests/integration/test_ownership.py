"""On a shared cluster the operator changes only what it controls (issue 11).

A Service or Deployment of the name a ModelDeployment needs that belongs to someone else is left
exactly as it is (server-side apply with force would silently take it over); the ModelDeployment
says so (Degraded, NameConflict, one Event) and recovers by itself once the name is free. Turning
autoscaling on hands `replicas` to the HPA without the Deployment ever dropping below its size.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes import client, watch

from tests.conftest import wait_for
from tests.integration.test_operator import Cluster, mdep

pytestmark = pytest.mark.cluster


@pytest.fixture
def k(api_client: client.ApiClient, namespace: str, operator: Any) -> Cluster:
    return Cluster(api_client, namespace)


def degraded_reason(k: Cluster, name: str) -> str | None:
    st = k.get(name).get("status", {})
    cond = next((c for c in st.get("conditions", []) if c["type"] == "Degraded"), None)
    return cond["reason"] if st.get("phase") == "Degraded" and cond else None


def test_someone_elses_service_is_not_taken_over_and_the_name_frees_itself(k: Cluster) -> None:
    theirs = client.V1Service(
        metadata=client.V1ObjectMeta(name="shared", labels={"team": "search"}),
        spec=client.V1ServiceSpec(selector={"app": "search"}, ports=[client.V1ServicePort(port=80, target_port=8080)]))
    k.core.create_namespaced_service(k.ns, theirs)
    k.create(mdep("shared"))
    wait_for(lambda: degraded_reason(k, "shared") == "NameConflict", 30, what="Degraded NameConflict")
    svc = k.core.read_namespaced_service("shared", k.ns)
    assert svc.spec.selector == {"app": "search"} and svc.metadata.labels == {"team": "search"}
    assert not svc.metadata.owner_references
    assert {m.manager for m in svc.metadata.managed_fields} == {"kubectl-create"} or \
        all(m.manager != "modeldeploy" for m in svc.metadata.managed_fields)
    msg = k.get("shared")["status"]["message"]
    assert f"Service {k.ns}/shared already exists and is not managed by this ModelDeployment" in msg
    assert "rename the ModelDeployment" in msg
    # The owner's own Deployment may exist (it was created before the Service was found), but it is not
    # rolled while blocked; the name is freed: within the (test) backoff of 5 s the operator takes it.
    k.core.delete_namespaced_service("shared", k.ns)
    wait_for(lambda: k.healthy("shared"), 60, what="Healthy once the name is free")
    svc = k.core.read_namespaced_service("shared", k.ns)
    assert svc.spec.selector == {"modeldeploy.io/name": "shared"}
    assert svc.metadata.owner_references[0].kind == "ModelDeployment"
    # Several passes ran while it lasted (backoff 1, 2, 4, 5 s...), one Event said so.
    conflicts = [e for e in k.events("shared") if e.reason == "NameConflict"]
    assert len(conflicts) == 1 and (conflicts[0].count or 1) == 1, [e.message for e in conflicts]
    assert "Service" in conflicts[0].message and "no owner" in conflicts[0].message


def test_someone_elses_deployment_keeps_its_spec(k: Cluster) -> None:
    theirs = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="taken"),
        spec=client.V1DeploymentSpec(
            replicas=0, selector=client.V1LabelSelector(match_labels={"app": "taken"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "taken"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="registry.example/web:1")]))))
    k.apps.create_namespaced_deployment(k.ns, theirs)
    k.create(mdep("taken"))
    wait_for(lambda: degraded_reason(k, "taken") == "NameConflict", 30, what="Degraded NameConflict")
    dep = k.deployment("taken")
    assert dep is not None and dep.spec.replicas == 0
    assert dep.spec.template.spec.containers[0].image == "registry.example/web:1"
    assert not dep.metadata.owner_references and dep.spec.selector.match_labels == {"app": "taken"}
    assert f"Deployment {k.ns}/taken" in k.get("taken")["status"]["message"]


def test_autoscaling_on_never_drops_the_replicas_before_the_hpa_decides(k: Cluster) -> None:
    k.create(mdep("scaled", replicas=6))
    wait_for(lambda: k.healthy("scaled") and k.get("scaled")["status"]["readyReplicas"] == 6, 90,
             what="Healthy with 6 ready")
    seen: list[int] = []
    stop = threading.Event()
    start_rv = k.deployment("scaled").metadata.resource_version  # type: ignore[union-attr]

    def record() -> None:
        w = watch.Watch()
        for ev in w.stream(k.apps.list_namespaced_deployment, k.ns, field_selector="metadata.name=scaled",
                           resource_version=start_rv, timeout_seconds=120):
            seen.append(ev["object"].spec.replicas)
            if stop.is_set():
                w.stop()

    t = threading.Thread(target=record, daemon=True)
    t.start()
    # As users do it: CPU requests (the HPA's base) with autoscaling, so the Deployment is re-applied too.
    k.patch("scaled", {"replicas": None, "model": {"resources": {"requests": {"cpu": "100m"}}},
                       "autoscaling": {"minReplicas": 2, "maxReplicas": 10, "targetCPUUtilizationPercentage": 70}})

    def hpa_decided() -> bool:  # the HPA controller has looked at it (no metrics here: it cannot scale)
        try:
            hpa = k.autoscaling.read_namespaced_horizontal_pod_autoscaler("scaled", k.ns)
        except client.ApiException:
            return False
        return bool(hpa.status and hpa.status.conditions)

    wait_for(hpa_decided, 60, what="HPA status written by the HPA controller")
    wait_for(lambda: k.deployment("scaled").spec.template.spec.containers[0].resources.requests,  # type: ignore[union-attr]
             30, what="the Deployment re-applied with CPU requests")
    dep = k.deployment("scaled")
    assert dep is not None and dep.spec.replicas == 6
    # Our apply no longer claims replicas; the handover manager (or the HPA) holds it.
    owners = [m.manager for m in dep.metadata.managed_fields if m.fields_v1 and
              "f:replicas" in (m.fields_v1.get("f:spec") or {})]
    assert "modeldeploy" not in owners and owners, owners
    stop.set()  # one more event (an annotation of ours) lets the recorder see it and stop
    k.apps.patch_namespaced_deployment("scaled", k.ns, {"metadata": {"annotations": {"test/done": "1"}}})
    t.join(timeout=30)
    assert seen and min(seen) >= 6, seen
