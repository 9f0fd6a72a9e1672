"""The plain-manifest install paths against real servers.

- `kubectl apply -k manifests/install`: CRD, namespace (Pod Security "restricted"), RBAC and the
  operator Deployment accepted by the real API server and the operator pod admitted and Ready.
- `kubectl apply --dry-run=server` of every example: the API server (schema + CEL rules) accepts
  them; a broken variant is rejected, so the dry run is not vacuous.
- The argocd-cm patch merges into an existing argocd-cm with `kubectl patch --patch-file`.
- The shipped Prometheus relabelling, run by a real Prometheus, gives scraped model series the
  labels the canary analysis selects on (modeldeploy_io_name, modeldeploy_io_track, namespace, pod).
"""

from __future__ import annotations

import copy
import http.server
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "manifests" / "install"
EXAMPLES = sorted((REPO / "manifests" / "examples").glob("*.yaml"))
ARGOCD = REPO / "manifests" / "argocd"


def run(env: dict[str, str], *args: str, check: bool = True, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=180, input=stdin)
    if check:
        assert res.returncode == 0, f"{' '.join(args)}:\n{res.stdout}\n{res.stderr}"
    return res


# --------------------------------------------------------------------------------------------
# kubectl apply -k manifests/install
# --------------------------------------------------------------------------------------------
@pytest.mark.cluster
def test_kubectl_apply_kustomize_install(kube_env: dict[str, str], api_client: client.ApiClient, crd: str) -> None:
    # `crd` first: the session's CRD is server-side applied by the fixture; a client-side apply
    # before it would own .spec.versions and make the fixture's server-side apply conflict.
    rendered = run(kube_env, "kubectl", "kustomize", str(INSTALL)).stdout
    non_crd = "---\n".join(yaml.safe_dump(d) for d in yaml.safe_load_all(rendered)
                           if d and d["kind"] != "CustomResourceDefinition")
    apps = client.AppsV1Api(api_client)
    core = client.CoreV1Api(api_client)
    try:
        out = run(kube_env, "kubectl", "apply", "-k", str(INSTALL)).stdout
        assert "customresourcedefinition.apiextensions.k8s.io/modeldeployments.modeldeploy.io" in out
        assert "deployment.apps/modeldeploy" in out
        ns = core.read_namespace("modeldeploy-system")
        assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"

        def available() -> bool:
            d = apps.read_namespaced_deployment("modeldeploy", "modeldeploy-system")
            return d.status.available_replicas == 1

        wait_for(available, 120, what="kustomize-installed operator available (pod admitted under restricted)")
        d = apps.read_namespaced_deployment("modeldeploy", "modeldeploy-system")
        assert d.spec.template.spec.service_account_name == "modeldeploy"
        assert d.metadata.labels["app.kubernetes.io/managed-by"] == "kubectl"
        sa = "system:serviceaccount:modeldeploy-system:modeldeploy"
        can = run(kube_env, "kubectl", "auth", "can-i", "patch", "deployments.apps", "-n", "default", "--as", sa,
                  check=False)
        assert can.stdout.strip() == "yes"
        for verb in ("list", "get"):  # the install's defaults: no Prometheus credentials, so no Secret at all
            can = run(kube_env, "kubectl", "auth", "can-i", verb, "secrets", "-n", "default", "--as", sa, check=False)
            assert can.stdout.strip() == "no", verb
        # applying again changes nothing
        again = run(kube_env, "kubectl", "apply", "-k", str(INSTALL)).stdout
        ours = [line for line in again.splitlines() if not line.startswith("customresourcedefinition")]
        assert ours and all(line.endswith(" unchanged") for line in ours), again
        # moving to server-side apply (recommended for CRDs) takes the fields over
        ssa = run(kube_env, "kubectl", "apply", "--server-side", "--force-conflicts", "-k", str(INSTALL)).stdout
        assert "deployment.apps/modeldeploy serverside-applied" in ssa
        wait_for(available, 60, what="operator available after the server-side re-apply")
    finally:
        # everything but the CRD, which other tests in the session use
        run(kube_env, "kubectl", "delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=non_crd,
            check=False)


# --------------------------------------------------------------------------------------------
# examples: server-side dry run
# --------------------------------------------------------------------------------------------
def test_examples_cover_every_router_autoscaling_and_a_custom_metric() -> None:
    specs = {p.name: yaml.safe_load(p.read_text())["spec"] for p in EXAMPLES}
    routers = {next(iter(s.get("rollout", {}).get("canary", {}).get("trafficRouter", {"replicas": {}})))
               for s in specs.values()}
    assert routers == {"replicas", "gatewayAPI", "istio"}
    assert any("autoscaling" in s for s in specs.values())
    metrics = [m for s in specs.values() for m in s.get("rollout", {}).get("analysis", {}).get("metrics", [])]
    assert any("query" in m for m in metrics)
    assert "minimal.yaml" in specs


@pytest.mark.cluster
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_accepted_by_the_api_server(example: Path, kube_env: dict[str, str], crd: str,
                                                namespace: str) -> None:
    out = run(kube_env, "kubectl", "apply", "--dry-run=server", "-n", namespace, "-f", str(example)).stdout
    assert "(server dry run)" in out


@pytest.mark.cluster
def test_broken_example_is_rejected(kube_env: dict[str, str], crd: str, namespace: str) -> None:
    obj: dict[str, Any] = yaml.safe_load((REPO / "manifests" / "examples" / "canary-replicas.yaml").read_text())
    bad = copy.deepcopy(obj)
    bad["spec"]["rollout"]["analysis"]["metrics"][0]["max"] = 5  # error-rate is a ratio
    res = run(kube_env, "kubectl", "apply", "--dry-run=server", "-n", namespace, "-f", "-",
              stdin=yaml.safe_dump(bad), check=False)
    assert res.returncode != 0 and "error-rate is a ratio" in res.stderr, res.stderr
    bad = copy.deepcopy(obj)
    del bad["spec"]["rollout"]["analysis"]["prometheus"]
    res = run(kube_env, "kubectl", "apply", "--dry-run=server", "-n", namespace, "-f", "-",
              stdin=yaml.safe_dump(bad), check=False)
    assert res.returncode != 0 and "analysis.prometheus is required" in res.stderr, res.stderr


# --------------------------------------------------------------------------------------------
# Argo CD: the argocd-cm patch merges into an existing argocd-cm
# --------------------------------------------------------------------------------------------
@pytest.mark.cluster
def test_argocd_cm_patch_merges(kube_env: dict[str, str], api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="argocd")))
    except ApiException as e:
        if e.status != 409:
            raise
    try:
        core.create_namespaced_config_map("argocd", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="argocd-cm"), data={"url": "https://argocd.example"}))
        run(kube_env, "kubectl", "-n", "argocd", "patch", "configmap", "argocd-cm", "--patch-file",
            str(ARGOCD / "argocd-cm-patch.yaml"))
        cm = core.read_namespaced_config_map("argocd-cm", "argocd")
        assert cm.data["url"] == "https://argocd.example"  # the user's settings survive
        lua = ARGOCD / "resource-customizations"
        assert cm.data["resource.customizations.health.modeldeploy.io_ModelDeployment"] == (
            lua / "health.lua").read_text()
        actions = yaml.safe_load(cm.data["resource.customizations.actions.modeldeploy.io_ModelDeployment"])
        assert actions["discovery.lua"] == (lua / "actions" / "discovery.lua").read_text()
    finally:
        core.delete_namespace("argocd")


# --------------------------------------------------------------------------------------------
# monitoring: the shipped relabelling, run by a real Prometheus
# --------------------------------------------------------------------------------------------
METRICS = b"""# TYPE bentoml_service_request_total counter
bentoml_service_request_total{endpoint="/predict",http_response_code="200",service_name="room_price"} 42
"""


@pytest.fixture
def metrics_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(METRICS)

        def log_message(self, *_: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def pod_meta(name: str, track: str, managed_by: str = "modeldeploy") -> dict[str, str]:
    """The labels Kubernetes service discovery would give a model pod (see the operator's builders)."""
    return {
        "__meta_kubernetes_namespace": "models",
        "__meta_kubernetes_pod_name": name,
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_container_port_name": "http",
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
        "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
        "__meta_kubernetes_pod_label_app_kubernetes_io_managed_by": managed_by,
        "__meta_kubernetes_pod_label_modeldeploy_io_name": "room-price",
        "__meta_kubernetes_pod_label_modeldeploy_io_track": track,
        "__meta_kubernetes_pod_label_modeldeploy_io_revision": "abc123" if track == "stable" else "def456",
    }


@pytest.mark.prometheus
def test_scrape_config_relabels_track_labels(prometheus: Callable[..., Any], metrics_server: str) -> None:
    from localprom import PrometheusServer
    from modeldeploy.metrics.queries import selector

    job = yaml.safe_load((REPO / "manifests" / "monitoring" / "prometheus-scrape-config.yaml").read_text())[
        "scrape_configs"][0]
    # Kubernetes service discovery is not built into Debian's Prometheus: the same relabel_configs
    # over static targets carrying the __meta labels Kubernetes discovery would attach.
    job.pop("kubernetes_sd_configs")
    job["scrape_interval"] = job["scrape_timeout"] = "1s"
    job["static_configs"] = [
        {"targets": [metrics_server], "labels": pod_meta("room-price-stable-0", "stable")},
        {"targets": [metrics_server], "labels": pod_meta("room-price-canary-0", "canary")},
        {"targets": [metrics_server], "labels": pod_meta("someone-else-0", "stable", managed_by="helm")},
    ]
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": [job]}

    class Custom(PrometheusServer):
        def write_config(self) -> Path:
            path = self.workdir / "prometheus.yml"
            path.write_text(yaml.safe_dump(config))
            return path

    started: PrometheusServer = prometheus([])
    started.stop()  # the fixture's own server is not needed; ours uses the shipped job
    prom = Custom([], workdir=started.workdir).start()
    try:
        def both_tracks() -> list[dict]:
            res = prom.query('bentoml_service_request_total{modeldeploy_io_name="room-price"}')
            return res if len(res) == 2 else []

        series = wait_for(both_tracks, 30, what="both model pods scraped with track labels")
        labels = {s["metric"]["modeldeploy_io_track"]: s["metric"] for s in series}
        assert labels["canary"]["pod"] == "room-price-canary-0"
        assert labels["canary"]["namespace"] == "models"
        assert labels["canary"]["modeldeploy_io_revision"] == "def456"
        assert labels["stable"]["pod"] == "room-price-stable-0"
        assert not any(k.startswith("__") and k != "__name__" for s in series for k in s["metric"])
        # the operator's own analysis selector finds exactly the canary's series
        got = prom.query(f"bentoml_service_request_total{{{selector('models', 'room-price', 'canary', 'def456')}}}")
        assert [s["metric"]["pod"] for s in got] == ["room-price-canary-0"]
        # ... and none of another revision's
        assert prom.query(f"bentoml_service_request_total{{{selector('models', 'room-price', 'canary', 'abc')}}}") == []
        # the pod not managed by modeldeploy was dropped
        assert len(prom.api("/api/v1/targets")["data"]["activeTargets"]) == 2
    finally:
        prom.stop()
