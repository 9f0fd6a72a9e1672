#!/usr/bin/env python3
"""`make demo`: the whole product on one machine, every component real, pods included.

1. a local cluster: control plane and a real node (containerd, kubelet, kube-proxy on a pod bridge);
2. the images, built here without a registry (hack/images.py, cached): the operator and four
   model versions packaged as Bentos, imported into the node's containerd;
3. the operator installed by its Helm chart; Prometheus discovering the model pods through the API
   server with manifests/monitoring's scrape configuration;
4. a ModelDeployment (v1) in a namespace enforcing Pod Security "restricted": Running pods, one
   `curl` through its Service;
5. load through the Service (40 req/s; the client never reads the operator's status): v2, which
   fails 30 % of its requests, goes canary and is rolled back; v3 is promoted step by step, each
   step's observed v3 share printed beside the weight the operator reports; v4, which answers 200 OK
   quickly with predictions 60 % high (trained on wrongly scaled labels), is rolled back by the
   prediction-drift check against v3, the drift value and threshold in status and in the Event.

Everything started is stopped at the end (KEEP=1 leaves the cluster, operator and Prometheus up).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
sys.path.insert(0, str(HACK))

from demostory import DIM, RESET, Story, say  # noqa: E402
from localcluster import LocalCluster, bin_dir  # noqa: E402
from localnet import NODE_IP  # noqa: E402
from localnode import real_pods_namespace_metadata  # noqa: E402
from localoperator import InClusterOperator  # noqa: E402
from localprom import SCRAPE_CONFIG, PrometheusServer, cluster_prometheus  # noqa: E402


def show(*args: str) -> None:
    out = subprocess.run(["kubectl", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {out.stderr}")
    print(out.stdout, end="", flush=True)


def main() -> int:
    keep = os.environ.get("KEEP") == "1"
    work = Path(tempfile.mkdtemp(prefix="modeldeploy-demo-"))
    cluster = LocalCluster()
    operator: InClusterOperator | None = None
    prom: PrometheusServer | None = None
    ok = False
    try:
        say("1. local cluster: control plane + a real node (containerd, kubelet, kube-proxy on the pod bridge)")
        secs = cluster.up()
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        print(f"nodes Ready after {secs:.1f}s" if secs else "reusing the running cluster")
        show("get", "nodes", "-o", "wide")

        say("2. images, built here without a registry (cached by their inputs) and imported into containerd")
        from images import OPERATOR_TAG, TEST_MODELS, model_version, operator_image, test_model_image

        node = cluster.real_node()
        versions = {}
        for label, build in [("operator", operator_image)] + [
                (f"room-price:v{i}", lambda i=i: test_model_image(i)) for i in TEST_MODELS]:
            t0 = time.monotonic()
            archive = build()
            t1 = time.monotonic()
            names = node.import_image(archive)
            print(f"  {label:<16} built/cached {t1 - t0:5.1f}s, imported {time.monotonic() - t1:4.1f}s  "
                  f"{DIM}{', '.join(names)}{RESET}")
            if label.startswith("room-price"):
                versions[label[-2:]] = model_version(archive) or "?"

        say("3. the operator, installed by its Helm chart (own image, ServiceAccount, RBAC)")
        cluster.install_crd(REPO / "crds", "modeldeployments.modeldeploy.io")
        operator = InClusterOperator(str(cluster.kubeconfig), OPERATOR_TAG, resync_seconds=10).start()
        show("get", "pods", "-n", operator.NAMESPACE, "-o", "wide")

        (work / "prom").mkdir()
        prom = cluster_prometheus(cluster.server, cluster.state_dir / "pki", cluster.bins or bin_dir(), work / "prom",
                                  NODE_IP).start()
        print(f"  Prometheus {prom.url}: kubernetes_sd_configs (role pod) with {SCRAPE_CONFIG.relative_to(REPO)}")

        Story(env=dict(os.environ), prometheus_url=prom.url, versions=versions,
              namespace_metadata=real_pods_namespace_metadata()).run()
        ok = True
        return 0
    finally:
        if keep and ok:
            say(f"left running: export KUBECONFIG={cluster.kubeconfig}")
            print(f"Prometheus {prom.url if prom else '-'} (pid {prom.proc.pid if prom and prom.proc else '-'}); "
                  "stop: kill that pid, then make cluster-down")
        else:
            say("stopping everything the demo started")
            if prom is not None:
                prom.stop()
            if operator is not None:
                operator.stop()
            cluster.down(quiet=True)
            left = cluster.leftovers()
            print(f"machine as it was: {left or 'yes'}")
            if not ok:
                print(f"demo failed; logs in {work} and {cluster.logs}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
