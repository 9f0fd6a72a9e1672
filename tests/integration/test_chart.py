"""`helm install`, `helm upgrade`, `helm uninstall` of charts/modeldeploy against the real control plane.

One release goes through the whole life cycle (kept to one cycle: the machine is shared):
install cluster-wide into a namespace that enforces Pod Security "restricted" (so admission
proves the operator pod complies) and wait for the Deployment to be available (kwok runs no
containers but reports the pods Ready); check least privilege with real authorization checks
(`kubectl auth can-i` as the operator's ServiceAccount); upgrade to namespaced mode with two
replicas and leader election (a Lease in the release namespace, nowhere else); uninstall and
check everything but the CRDs is gone.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.conftest import temp_namespace, wait_for

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modeldeploy"


def run(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert res.returncode == 0, f"{' '.join(args)}:\n{res.stdout}\n{res.stderr}"
    return res


def can_i(env: dict[str, str], sa: str, verb: str, resource: str, namespace: str | None = None) -> bool:
    args = ["kubectl", "auth", "can-i", verb, resource, "--as", sa]
    args += ["-n", namespace] if namespace else []
    res = run(env, *args, check=False)
    assert res.stdout.strip() in ("yes", "no"), res.stdout + res.stderr
    return res.stdout.strip() == "yes"


def exists(read: object, *args: str) -> bool:
    try:
        read(*args)  # type: ignore[operator]
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise


@pytest.fixture
def watched_namespace(api_client: client.ApiClient) -> Iterator[str]:
    with temp_namespace(api_client, "w") as name:
        yield name


def test_helm_install_upgrade_uninstall(kube_env: dict[str, str], api_client: client.ApiClient, namespace: str,
                                        watched_namespace: str, crd: str) -> None:
    # `crd`: the session's CRD comes from the fixture (server-side apply); helm then skips the
    # existing CRD, the only one in the chart's crds/.
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    rbac = client.RbacAuthorizationV1Api(api_client)
    ext = client.ApiextensionsV1Api(api_client)
    release = f"md{uuid.uuid4().hex[:6]}"
    full = f"{release}-modeldeploy"
    sa = f"system:serviceaccount:{namespace}:{full}"
    other_ns = "default"
    run(kube_env, "kubectl", "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest")

    def available(replicas: int) -> bool:
        d = apps.read_namespaced_deployment(full, namespace)
        return (d.status.observed_generation == d.metadata.generation and d.status.available_replicas == replicas
                and d.status.updated_replicas == replicas)

    try:
        # ---- install: cluster-wide, one standalone replica ---------------------------------
        out = run(kube_env, "helm", "install", release, str(CHART), "-n", namespace, "--wait",
                  "--timeout", "180s").stdout
        assert f'is installed as release "{release}"' in out  # NOTES.txt rendered
        assert "kubectl annotate mdep room-price modeldeploy.io/promote" in out
        wait_for(lambda: available(1), 60, what="operator Deployment available")
        dep = apps.read_namespaced_deployment(full, namespace)
        pod_spec = dep.spec.template.spec
        assert pod_spec.security_context.run_as_non_root
        assert pod_spec.containers[0].security_context.read_only_root_filesystem
        pods = core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={release}").items
        assert len(pods) == 1 and pods[0].status.phase == "Running"  # admitted under "restricted"
        assert core.read_namespaced_service(f"{full}-metrics", namespace).spec.ports[0].name == "metrics"
        assert core.read_namespaced_service_account(full, namespace)
        assert exists(ext.read_custom_resource_definition, "modeldeployments.modeldeploy.io")
        for crd in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):  # kopf peering is gone
            assert not exists(ext.read_custom_resource_definition, crd), crd
        assert exists(rbac.read_cluster_role_binding, full)

        # least privilege, decided by the API server's authorizer
        assert can_i(kube_env, sa, "watch", "modeldeployments.modeldeploy.io", other_ns)
        assert can_i(kube_env, sa, "patch", "modeldeployments.modeldeploy.io/status", other_ns)
        assert can_i(kube_env, sa, "patch", "deployments.apps", other_ns)
        assert can_i(kube_env, sa, "delete", "horizontalpodautoscalers.autoscaling", other_ns)
        assert not can_i(kube_env, sa, "get", "secrets", other_ns)  # no Prometheus credentials: no Secret at all
        assert not can_i(kube_env, sa, "get", "configmaps", other_ns)
        assert not can_i(kube_env, sa, "list", "httproutes.gateway.networking.k8s.io", other_ns)
        assert not can_i(kube_env, sa, "create", "events.events.k8s.io", other_ns)
        assert not can_i(kube_env, sa, "list", "namespaces")  # kopf watches cluster-wide, never namespaces
        assert not can_i(kube_env, sa, "list", "secrets", other_ns)
        assert not can_i(kube_env, sa, "update", "secrets", other_ns)
        assert not can_i(kube_env, sa, "create", "pods", other_ns)
        assert not can_i(kube_env, sa, "delete", "modeldeployments.modeldeploy.io", other_ns)
        assert not can_i(kube_env, sa, "create", "clusterrolebindings.rbac.authorization.k8s.io")
        # one replica: no leader election, no Lease access anywhere
        assert not can_i(kube_env, sa, "get", "leases.coordination.k8s.io", namespace)
        assert not can_i(kube_env, sa, "create", "leases.coordination.k8s.io", namespace)

        # ---- upgrade: namespaced mode, two replicas with leader election ------------------
        run(kube_env, "helm", "upgrade", release, str(CHART), "-n", namespace, "--wait", "--timeout", "180s",
            "--set", f"operator.watchNamespaces[0]={watched_namespace}", "--set", "replicaCount=2",
            "--set", "metrics.service.port=9100", "--set", "prometheus.credentials.enabled=true",
            "--set-json", 'prometheus.credentials.secretNames=["prom-auth"]')
        wait_for(lambda: available(2), 90, what="two operator replicas available")
        env = {e.name: e.value for e in apps.read_namespaced_deployment(full, namespace).spec.template.spec
               .containers[0].env}
        assert env["MODELDEPLOY_NAMESPACES"] == watched_namespace
        assert env["MODELDEPLOY_LEADER_ELECTION"] == "true" and env["MODELDEPLOY_LEASE_NAME"] == full
        assert not exists(rbac.read_cluster_role_binding, full), "cluster-wide binding left behind"
        assert exists(rbac.read_namespaced_role, full, watched_namespace)
        assert exists(rbac.read_namespaced_role_binding, full, watched_namespace)
        assert exists(rbac.read_namespaced_role, f"{full}-leader-election", namespace)
        assert exists(rbac.read_namespaced_role_binding, f"{full}-leader-election", namespace)
        assert apps.read_namespaced_deployment(full, namespace).spec.strategy.type == "RollingUpdate"
        assert client.PolicyV1Api(api_client).read_namespaced_pod_disruption_budget(full, namespace)
        assert core.read_namespaced_service(f"{full}-metrics", namespace).spec.ports[0].port == 9100
        assert can_i(kube_env, sa, "patch", "deployments.apps", watched_namespace)
        # Prometheus credentials by name: that Secret, in the watched namespace, and nothing else
        assert can_i(kube_env, sa, "get", "secrets/prom-auth", watched_namespace)
        assert not can_i(kube_env, sa, "get", "secrets/someone-elses", watched_namespace)
        assert not can_i(kube_env, sa, "get", "secrets/prom-auth", other_ns)
        assert not can_i(kube_env, sa, "list", "secrets", watched_namespace)
        # the Lease: create, and get/update of its own name, in the release namespace only
        lease = f"leases.coordination.k8s.io/{full}"
        assert can_i(kube_env, sa, "create", "leases.coordination.k8s.io", namespace)
        assert can_i(kube_env, sa, "get", lease, namespace)
        assert can_i(kube_env, sa, "update", lease, namespace)
        assert not can_i(kube_env, sa, "update", "leases.coordination.k8s.io/someone-elses", namespace)
        assert not can_i(kube_env, sa, "delete", lease, namespace)
        assert not can_i(kube_env, sa, "list", "leases.coordination.k8s.io", namespace)
        assert not can_i(kube_env, sa, "update", lease, watched_namespace)
        assert not can_i(kube_env, sa, "create", "leases.coordination.k8s.io", "kube-system")
        assert not can_i(kube_env, sa, "patch", "deployments.apps", other_ns)
        assert not can_i(kube_env, sa, "watch", "modeldeployments.modeldeploy.io", other_ns)
        assert not can_i(kube_env, sa, "list", "namespaces")
        assert can_i(kube_env, sa, "list", "customresourcedefinitions.apiextensions.k8s.io")
        history = json.loads(run(kube_env, "helm", "history", release, "-n", namespace, "-o", "json").stdout)
        assert [h["status"] for h in history] == ["superseded", "deployed"]
    finally:
        # ---- uninstall ------------------------------------------------------------------------
        res = run(kube_env, "helm", "uninstall", release, "-n", namespace, "--wait", "--timeout", "120s",
                  check=False)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: not exists(apps.read_namespaced_deployment, full, namespace), 60, what="Deployment deleted")
    for read, args in [(rbac.read_cluster_role, (full,)), (rbac.read_cluster_role, (f"{full}-cluster",)),
                       (rbac.read_cluster_role_binding, (f"{full}-cluster",)),
                       (rbac.read_namespaced_role, (full, watched_namespace)),
                       (rbac.read_namespaced_role, (f"{full}-leader-election", namespace)),
                       (rbac.read_namespaced_role_binding, (f"{full}-leader-election", namespace)),
                       (core.read_namespaced_service_account, (full, namespace)),
                       (core.read_namespaced_service, (f"{full}-metrics", namespace))]:
        assert not exists(read, *args), (read.__name__, args)
    # CRDs stay: deleting them would delete every ModelDeployment in the cluster
    assert exists(ext.read_custom_resource_definition, "modeldeployments.modeldeploy.io")
