"""kind smoke test: the path users take. Cluster up from the node image, the operator and model
images loaded with `kind load`, the chart installed by Helm, Prometheus in the cluster with the
shipped scrape config, one ModelDeployment Ready with Running pods, and one canary promoted while
load goes through the model's Service."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import clusterprom
import images
from canarylab import ServiceLoad
from kindcluster import KindCluster
from localcluster import bin_dir
from localoperator import InClusterOperator
from tests.conftest import wait_for

pytestmark = [pytest.mark.kind, pytest.mark.slow]
NS, NAME = "kind-smoke", "price"
RESOURCES = {"requests": {"cpu": "50m", "memory": "160Mi"}, "limits": {"memory": "1Gi"}}


def status(c: KindCluster) -> dict[str, Any]:
    out = c.kubectl("get", "mdep", NAME, "-n", NS, "-o", "json", check=False)
    return json.loads(out).get("status", {}) if out else {}


def test_kind_smoke(kind_cluster: KindCluster) -> None:
    c = kind_cluster
    times: dict[str, float] = dict(c.timings)
    prom_name, prom_archive = clusterprom.image(bin_dir() / "prometheus")
    archives = {"operator": images.operator_image(), "v1": images.test_model_image(1), "v3": images.test_model_image(3),
                "prometheus": prom_archive}
    for label, archive in archives.items():
        times[f"kind load {label}"] = c.load(archive)
    loaded = c.docker.docker("exec", f"{c.name}-control-plane", "crictl", "images").stdout
    assert "localhost/modeldeploy/room-price" in loaded and "modeldeploy/operator" in loaded

    c.apply(clusterprom.manifests(prom_name))
    t0 = time.monotonic()
    op = InClusterOperator(str(c.kubeconfig), images.OPERATOR_TAG, resync_seconds=3)
    op.env = c.env
    op.start()
    times["helm install --wait"] = time.monotonic() - t0
    c.kubectl("rollout", "status", "deployment/prometheus", "-n", clusterprom.NAMESPACE, "--timeout=120s")

    c.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": NS, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}])
    wait_for(lambda: c.kubectl("get", "sa", "default", "-n", NS, check=False), 30, what="default ServiceAccount")

    def model(v: str) -> dict[str, Any]:
        return {"image": f"localhost/modeldeploy/room-price:{v}", "bento": f"room_price:{v}", "env": [],
                "resources": RESOURCES}

    md = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
          "metadata": {"name": NAME, "namespace": NS},
          "spec": {"model": model("v1"), "autoscaling": {"minReplicas": 2, "maxReplicas": 2},
                   "rollout": {"strategy": "Canary", "canary": {"steps": [50], "interval": "10s"},
                               "analysis": {"prometheus": {"address": clusterprom.URL, "timeout": "2s"},
                                            "minRequests": 10, "failureLimit": 1, "errorLimit": 3,
                                            "metrics": [{"name": "error-rate", "max": 0.05}]}}}}
    t0 = time.monotonic()
    c.apply([md])
    wait_for(lambda: status(c).get("phase") == "Healthy", 240, what=f"{NAME} v1 Healthy")
    times["v1 Healthy"] = time.monotonic() - t0

    def running() -> bool:  # Healthy needs the Deployment Available, not every replica Running yet
        pods = json.loads(c.kubectl("get", "pods", "-n", NS, "-o", "json"))["items"]
        return len([p for p in pods if p["status"].get("phase") == "Running"]) >= 2

    wait_for(running, 120, what=f"2 Running pods of {NAME}")

    svc = json.loads(c.kubectl("get", "svc", NAME, "-n", NS, "-o", "json"))
    url = f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"
    load = ServiceLoad(url, rate_per_second=30, max_seconds=300).start()
    try:
        wait_for(lambda: load.by_version().get(images.model_version(archives["v1"]) or "?", {}).get("ok", 0) > 10, 60,
                 what=f"answers from v1 through the Service {url}")
        t0 = time.monotonic()
        c.kubectl("patch", "mdep", NAME, "-n", NS, "--type=merge", "-p", json.dumps({"spec": {"model": model("v3")}}))

        def done() -> bool:
            st = status(c)
            assert st.get("phase") not in ("RolledBack", "Failed"), st
            return st.get("phase") == "Healthy" and (st.get("stable") or {}).get("bento") == "room_price:v3"

        wait_for(done, 300, interval=1.0, what="v3 promoted")
        times["v3 promoted"] = time.monotonic() - t0
        v3 = images.model_version(archives["v3"]) or "?"
        assert load.by_version(since=t0).get(v3, {}).get("ok", 0) > 0, load.by_version(since=t0)
    finally:
        load.stop()
        op.stop()
    print("kind smoke timings (s): " + json.dumps({k: round(v, 1) for k, v in times.items()}))
