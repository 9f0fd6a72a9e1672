"""The chart's RBAC is exactly what the operator uses (issue 11, item 6), decided by a real API server.

The operator runs as a ServiceAccount holding only the rules the chart renders (cluster-wide mode,
leader election, Prometheus credentials on), through every feature that makes a distinct call:
children created, drifted away and re-created, autoscaling and a PodDisruptionBudget turned on and
off, the Gateway API and Istio routers and a switch back, a canary measured against a recording
listener with a labelled credentials Secret, a promote request, a model ServiceAccount, Events
and the Lease. The API server's audit log (hack/localcluster.py writes it for ServiceAccounts)
then says what was called: every call must have been allowed, and every rule must have been
used, but for the few listed in NOT_TRIGGERED with the reason this run cannot reach them.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from localcluster import LocalCluster
from localoperator import OperatorProcess
from tests.conftest import wait_for
from tests.integration.test_operator import Cluster, mdep
from tests.integration.test_prometheus_credentials import CREDENTIALS_LABEL, ONE, TOKEN, Recorder
from tests.integration.test_routers import router_crds  # noqa: F401  (a fixture)

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modeldeploy"

# (apiGroup, resource, verb) a rule grants that this run cannot make the operator use, and why.
NOT_TRIGGERED = {
    ("modeldeploy.io", "modeldeployments", "get"):
        "read only on a cache miss: after a 409 on its status write, or before the watch delivered it",
}


def render(release: str, namespace: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(REPO / ".venv" / "bin" / "helm"), "template", release, str(CHART), "-n", namespace,
         "--kube-version", "1.34.4", "--set", "leaderElection.enabled=true",
         "--set", "prometheus.credentials.enabled=true", "--set", "rbac.aggregateToDefaultRoles=false"],
        capture_output=True, text=True, check=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(out) if d]


RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


@pytest.fixture
def chart_rbac(kube_env: dict[str, str], namespace: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The chart's ServiceAccount and RBAC objects applied to the cluster; (ServiceAccount name, rendered docs)."""
    release = f"rb{uuid.uuid4().hex[:6]}"
    docs = [d for d in render(release, namespace) if d["kind"] in RBAC_KINDS]
    text = yaml.safe_dump_all(docs)
    subprocess.run(["kubectl", "apply", "-f", "-"], input=text, text=True, env=kube_env, check=True,
                   capture_output=True, timeout=60)
    (sa,) = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
    try:
        yield sa, docs
    finally:
        subprocess.run(["kubectl", "delete", "--ignore-not-found", "--wait=false", "-f", "-"], input=text, text=True,
                       env=kube_env, capture_output=True, timeout=60)


def sa_kubeconfig(kube_env: dict[str, str], kubeconfig: str, namespace: str, sa: str, path: Path) -> Path:
    token = subprocess.run(["kubectl", "create", "token", sa, "-n", namespace, "--duration=3600s"], env=kube_env,
                           capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    cfg["users"] = [{"name": sa, "user": {"token": token}}]
    for ctx in cfg["contexts"]:
        ctx["context"]["user"] = sa
    path.write_text(yaml.safe_dump(cfg))
    return path


def audited(cluster: LocalCluster, user: str) -> list[dict[str, Any]]:
    """The user's requests, one per audit ID (the last stage seen: ResponseComplete, or ResponseStarted
    for a watch still open)."""
    by_id: dict[str, dict[str, Any]] = {}
    for line in cluster.audit_log.read_text().splitlines():
        ev = json.loads(line)
        if ev.get("user", {}).get("username") == user:
            by_id[ev["auditID"]] = ev
    return list(by_id.values())


def granted(docs: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None,
            req_namespace: str | None) -> list[tuple[str, int]]:
    """The (role, rule index) entries that allow this request, from the rendered roles and bindings."""
    bound_cluster = {b["roleRef"]["name"] for b in docs if b["kind"] == "ClusterRoleBinding"}
    bound_ns = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in docs if b["kind"] == "RoleBinding"}
    out = []
    for role in docs:
        meta = role["metadata"]
        cluster_wide = role["kind"] == "ClusterRole" and meta["name"] in bound_cluster
        in_namespace = role["kind"] == "Role" and (meta.get("namespace"), meta["name"]) in bound_ns \
            and req_namespace == meta.get("namespace")
        if not (cluster_wide or in_namespace):
            continue
        for i, rule in enumerate(role["rules"]):
            names = rule.get("resourceNames")
            if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"] \
                    and (not names or name in names):
                out.append((f"{role['kind']}/{role['metadata']['name']}", i))
    return out


V2 = {"image": "registry.example/room-price:v2", "bento": "room_price:v2"}


def test_the_chart_grants_exactly_the_calls_the_operator_makes(
        cluster: LocalCluster, crd: str, kube_env: dict[str, str], kubeconfig: str, api_client: client.ApiClient,
        namespace: str, chart_rbac: tuple[str, list[dict[str, Any]]], router_crds: None,  # noqa: F811
        tmp_path: Path) -> None:
    sa, docs = chart_rbac
    lease = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-leader-election"))
    lease_name = next(r["resourceNames"][0] for r in lease["rules"] if r.get("resourceNames"))
    kc = sa_kubeconfig(kube_env, kubeconfig, namespace, sa, tmp_path / "sa.kubeconfig")
    listener = Recorder(answer=ONE)  # every query answers 1: enough traffic, an error rate within max 1
    op = OperatorProcess(str(kc), tmp_path / "operator.log", extra_env={
        "MODELDEPLOY_LEADER_ELECTION": "true", "MODELDEPLOY_LEASE_NAME": lease_name,
        "MODELDEPLOY_LEASE_NAMESPACE": namespace})
    k = Cluster(api_client, namespace)
    try:
        op.start()
        k.core.create_namespaced_service_account(namespace, client.V1ServiceAccount(
            metadata=client.V1ObjectMeta(name="model-sa")))
        k.core.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name="prom-auth", labels={CREDENTIALS_LABEL: "true"}),
            string_data={"token": TOKEN}))
        gateway = {"gatewayAPI": {"parentRefs": [{"name": "public-gw"}]}}
        body = mdep("audited", model={"image": "registry.example/room-price:v1", "serviceAccountName": "model-sa"},
                    autoscaling={"minReplicas": 2, "maxReplicas": 3},
                    rollout={"strategy": "Canary",
                             "canary": {"steps": [50], "interval": "10m", "trafficRouter": gateway},
                             "analysis": {"prometheus": {"address": listener.url, "secretRef": {"name": "prom-auth"}},
                                          "minRequests": 0, "measurementInterval": "1s",
                                          "metrics": [{"name": "error-rate", "max": 1.0}]}})
        k.create(body)
        wait_for(lambda: k.healthy("audited"), 90, what="v1 Healthy")

        # drift: children deleted behind the operator's back are read (cache miss) and created again
        for delete in (lambda: k.apps.delete_namespaced_deployment("audited", namespace),
                       lambda: k.core.delete_namespaced_service("audited", namespace),
                       lambda: k.autoscaling.delete_namespaced_horizontal_pod_autoscaler("audited", namespace),
                       lambda: k.policy.delete_namespaced_pod_disruption_budget("audited", namespace)):
            delete()
        wait_for(lambda: k.deployment("audited") is not None and k.healthy("audited"), 90, what="children back")

        # a canary, measured with the Secret's token, and promoted by request
        k.patch("audited", {"model": {**V2, "serviceAccountName": "model-sa"}})
        wait_for(lambda: [r for r in listener.requests if r["auth"] == f"Bearer {TOKEN}"], 60,
                 what="a measurement with the credentials")
        k.custom.patch_namespaced_custom_object("modeldeploy.io", "v1alpha1", namespace, "modeldeployments",
                                                "audited", {"metadata": {"annotations": {
                                                    "modeldeploy.io/promote": "true"}}})

        def promoted() -> bool:
            body = k.get("audited")
            st = body.get("status", {})
            return st.get("stable", {}).get("image", "").endswith(":v2") and \
                "modeldeploy.io/promote" not in (body["metadata"].get("annotations") or {})

        wait_for(promoted, 90, what="promoted on request, the annotation removed")

        # router switches: gatewayAPI -> istio (HTTPRoute deleted) -> replicas (VirtualService and the
        # per-track Services deleted); autoscaling and the PodDisruptionBudget off (both deleted)
        k.patch("audited", {"rollout": {"canary": {"trafficRouter": {"gatewayAPI": None, "istio": {}}}}})
        wait_for(lambda: "VirtualService/audited" in k.get("audited").get("status", {}).get("routing", []), 60,
                 what="istio routing")
        k.patch("audited", {"rollout": {"canary": {"trafficRouter": {"istio": None, "replicas": {}}}},
                            "autoscaling": None, "replicas": 1})
        wait_for(lambda: not k.get("audited").get("status", {}).get("routing") and not
                 k.autoscaling.list_namespaced_horizontal_pod_autoscaler(namespace).items and not
                 k.policy.list_namespaced_pod_disruption_budget(namespace).items and k.healthy("audited"), 60,
                 what="routes, HPA and PDB deleted")
    finally:
        op.stop()
        listener.stop()

    user = f"system:serviceaccount:{namespace}:{sa}"
    requests = audited(cluster, user)
    assert requests, f"no audit events for {user}"
    # Cluster-wide, the operator also sees what earlier tests left in namespaces being deleted; the API
    # server refuses writes there with 403 NamespaceTerminating, which is not RBAC. So the server's own
    # verdict is read for this test's namespace and cluster-scoped calls; `granted` below judges all.
    forbidden = [(e["verb"], e["requestURI"]) for e in requests if e.get("responseStatus", {}).get("code") == 403
                 and (e.get("objectRef") or {}).get("namespace") in (None, namespace)]
    assert not forbidden, f"the operator was refused: {forbidden}"
    refused = [line for line in (tmp_path / "operator.log").read_text().splitlines()
               if namespace in line and ("Forbidden" in line or " 403 " in line)]
    assert not refused, refused[:5]

    calls: set[tuple[str, str, str]] = set()
    unmatched = []
    for e in requests:
        ref = e.get("objectRef")
        if not ref:
            continue  # discovery (/api, /apis, /version): every authenticated user may
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        group = ref.get("apiGroup", "")
        verbs = [e["verb"]]
        if e["verb"] == "patch" and e.get("responseStatus", {}).get("code") == 201:
            verbs.append("create")  # a server-side apply that created the object is authorized as create too
        for verb in verbs:
            calls.add((group, resource, verb))
            if not granted(docs, group, resource, verb, ref.get("name"), ref.get("namespace")):
                unmatched.append((group, resource, verb, ref.get("namespace"), ref.get("name")))
    assert not unmatched, f"calls no rendered rule allows: {unmatched}"

    unused = []
    for role in docs:
        if role["kind"] not in ("ClusterRole", "Role"):
            continue
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        if (group, resource, verb) not in calls and (group, resource, verb) not in NOT_TRIGGERED:
                            unused.append((role["metadata"]["name"], group, resource, verb))
    assert not unused, f"granted but never used by the operator: {unused}\ncalls made: {sorted(calls)}"
