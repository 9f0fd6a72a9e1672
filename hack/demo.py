#!/usr/bin/env python3
"""`make demo`: the whole product on one machine, every component real, pods included.

1. a local cluster: control plane and a real node (containerd, kubelet, kube-proxy on a pod bridge);
2. the images, built here without a registry (hack/images.py, cached): the operator and three
   model versions packaged as Bentos, imported into the node's containerd;
3. the operator installed by its Helm chart; Prometheus discovering the model pods through the API
   server with manifests/monitoring's scrape configuration;
4. a ModelDeployment (v1) in a namespace enforcing Pod Security "restricted": Running pods, one
   `curl` through its Service;
5. load through the Service (40 req/s; the client never reads the operator's status): v2, which
   fails 30 % of its requests, goes canary and is rolled back; v3 is promoted step by step, each
   step's observed v3 share printed beside the weight the operator reports.

Everything started is stopped at the end (KEEP=1 leaves the cluster, operator and Prometheus up).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
sys.path.insert(0, str(HACK))

from canarylab import ServiceLoad  # noqa: E402
from localcluster import LocalCluster, bin_dir, wait_until  # noqa: E402
from localnet import NODE_IP  # noqa: E402
from localnode import real_pods_namespace_metadata  # noqa: E402
from localoperator import InClusterOperator  # noqa: E402
from localprom import SCRAPE_CONFIG, PrometheusServer, cluster_prometheus  # noqa: E402

BOLD, DIM, RED, GREEN, RESET = "\033[1m", "\033[2m", "\033[31m", "\033[32m", "\033[0m"
NAME, NS = "room-price", "demo"


def say(text: str) -> None:
    print(f"\n{BOLD}==> {text}{RESET}", flush=True)


def kubectl(*args: str, check: bool = True, stdin: str | None = None) -> str:
    out = subprocess.run(["kubectl", *args], capture_output=True, text=True, input=stdin)
    if check and out.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def show(*args: str) -> None:
    print(kubectl(*args), end="", flush=True)


def get_md() -> dict[str, Any]:
    return json.loads(kubectl("get", "mdep", NAME, "-n", NS, "-o", "json"))  # type: ignore[no-any-return]


def model(version: str, fault_rate: str | None = None) -> dict[str, Any]:
    # `env` always: a merge patch without it would keep the previous version's (v2's fault for v3).
    env = [{"name": "MODELDEPLOY_FAULT_ERROR_RATE", "value": fault_rate}] if fault_rate else []
    return {"image": f"localhost/modeldeploy/room-price:{version}", "bento": f"room_price:{version}", "env": env,
            "resources": {"requests": {"cpu": "50m", "memory": "160Mi"}, "limits": {"memory": "1Gi"}}}


def follow(until: Any, timeout: float, load: ServiceLoad, canary_version: str) -> dict[str, Any]:
    """A line per change of phase, step, weight or newest analysis; at each weight change, the share
    of answers the canary's version gave while the previous weight held. Stops when `until(status)`."""
    deadline = time.monotonic() + timeout
    t0 = last_change = time.monotonic()
    last: tuple[Any, ...] | None = None
    weight = 0
    while time.monotonic() < deadline:
        st = get_md().get("status", {})
        now = time.monotonic()
        new_weight = int(st.get("canaryWeight", 0))
        if new_weight != weight:
            if weight:
                report_share(load, canary_version, weight, last_change, now)
            weight, last_change = new_weight, now
        a = (st.get("lastAnalysis") or [{}])[0]
        key = (st.get("phase"), st.get("currentStep"), new_weight, a.get("time"), a.get("metric"))
        if key != last:
            last = key
            ana = ""
            if a:
                value = "-" if a.get("value") is None else f"{a['value']:.3g}"
                colour = RED if a.get("verdict") in ("Fail", "Error") else GREEN if a.get("verdict") == "Pass" else ""
                ana = f"  last analysis: {a.get('metric')}={value} {colour}{a.get('verdict')}{RESET}"
            print(f"  {now - t0:5.1f}s  {st.get('phase', ''):<11} step {st.get('currentStep', 0)}  "
                  f"canary weight {new_weight:>3}%{ana}", flush=True)
        if until(st):
            if weight:
                report_share(load, canary_version, weight, last_change, now)
            return st
        time.sleep(0.3)
    raise SystemExit("timed out following the rollout")


def report_share(load: ServiceLoad, version: str, weight: int, since: float, until: float) -> None:
    window = load.window(since + 1.0, until)  # 1 s for kube-proxy to program the new endpoints
    if len(window) < 20:
        return
    share = load.share(version, since + 1.0, until) or 0.0
    print(f"  {DIM}         reported weight {weight:>3}%  ->  observed share of the canary's answers "
          f"{share:5.1f}% ({len(window)} requests){RESET}", flush=True)


def main() -> int:
    keep = os.environ.get("KEEP") == "1"
    work = Path(tempfile.mkdtemp(prefix="modeldeploy-demo-"))
    cluster = LocalCluster()
    operator: InClusterOperator | None = None
    prom: PrometheusServer | None = None
    load: ServiceLoad | None = None
    ok = False
    try:
        say("1. local cluster: control plane + a real node (containerd, kubelet, kube-proxy on the pod bridge)")
        secs = cluster.up()
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        print(f"nodes Ready after {secs:.1f}s" if secs else "reusing the running cluster")
        show("get", "nodes", "-o", "wide")

        say("2. images, built here without a registry (cached by their inputs) and imported into containerd")
        from images import OPERATOR_TAG, model_version, operator_image, test_model_image

        node = cluster.real_node()
        versions = {}
        for label, build in [("operator", operator_image)] + [
                (f"room-price:v{i}", lambda i=i: test_model_image(i)) for i in (1, 2, 3)]:
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

        say(f"4. v1: a ModelDeployment in namespace {NS} (Pod Security 'restricted' enforced)")
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, **real_pods_namespace_metadata()}}
        kubectl("apply", "-f", "-", stdin=json.dumps(ns))
        wait_until(lambda: kubectl("get", "sa", "default", "-n", NS, check=False), 30, "default ServiceAccount")
        manifest = {
            "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {
                "model": model("v1"),
                "autoscaling": {"minReplicas": 2, "maxReplicas": 4},
                "rollout": {"strategy": "Canary", "canary": {"steps": [20, 50, 80], "interval": "10s"},
                            "analysis": {"prometheus": {"address": prom.url}, "minRequests": 10, "failureLimit": 1,
                                         "metrics": [{"name": "error-rate", "max": 0.05},
                                                     {"name": "latency-p99", "max": 0.5}]}},
            },
        }
        (work / "mdep.yaml").write_text(json.dumps(manifest, indent=2))
        t0 = time.monotonic()
        show("apply", "-f", str(work / "mdep.yaml"))
        wait_until(lambda: get_md().get("status", {}).get("phase") == "Healthy", 240, "v1 Healthy")
        print(f"  {GREEN}Healthy {time.monotonic() - t0:.1f}s after kubectl apply{RESET}")
        show("get", "mdep,deploy,svc,hpa", "-n", NS)
        show("get", "pods", "-n", NS, "-o", "wide")
        show("get", "pods", "-n", NS, "-o",
             "custom-columns=POD:.metadata.name,CONTAINER-ID:.status.containerStatuses[0].containerID,"
             "IMAGE:.status.containerStatuses[0].image,UID:.spec.securityContext.runAsUser")
        svc = json.loads(kubectl("get", "svc", NAME, "-n", NS, "-o", "json"))
        url = f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"
        cmd = ["curl", "-sS", "-i", "-X", "POST", f"{url}/predict", "-H", "content-type: application/json",
               "-d", '{"rows": [[62.0, 3.0, 1.0]]}']
        print(f"  $ {' '.join(c if ' ' not in c and '{' not in c else repr(c) for c in cmd)}")
        wait_until(lambda: subprocess.run(cmd, capture_output=True).returncode == 0, 30, "the Service answering")
        print("  " + subprocess.run(cmd, capture_output=True, text=True).stdout.replace("\n", "\n  "))

        load = ServiceLoad(url, rate_per_second=40, max_seconds=400).start()
        print(f"  load: 40 req/s to {url}/predict, a new connection each (kube-proxy picks the pod)")

        say("5. v2 (30 % of its answers are 500s): canary, analysis sees the errors, rollback")
        t0 = time.monotonic()
        patch = json.dumps({"spec": {"model": model("v2", "0.3")}})
        kubectl("patch", "mdep", NAME, "-n", NS, "--type=merge", "-p", patch)
        st = follow(lambda s: s.get("phase") in ("RolledBack", "Failed"), 240, load, versions["v2"])
        print(f"{RED}  rolled back {time.monotonic() - t0:.1f}s after v2 was applied:{RESET} {st.get('message')}")
        subprocess.run([sys.executable, "-m", "modeldeploy.cli", "status", NAME, "-n", NS], check=False)

        say("6. v3 (healthy): promoted step by step")
        t0 = time.monotonic()
        t_v3 = time.monotonic()
        kubectl("patch", "mdep", NAME, "-n", NS, "--type=merge", "-p", json.dumps({"spec": {"model": model("v3")}}))
        st = follow(lambda s: s.get("phase") in ("RolledBack", "Failed") or (
            s.get("phase") == "Healthy" and (s.get("stable") or {}).get("bento") == "room_price:v3"), 300, load,
            versions["v3"])
        if st.get("phase") != "Healthy":
            raise SystemExit(f"v3 was not promoted: {st.get('message')}")
        print(f"{GREEN}  promoted {time.monotonic() - t0:.1f}s after v3 was applied{RESET}")
        subprocess.run([sys.executable, "-m", "modeldeploy.cli", "status", NAME, "-n", NS], check=False)
        wait_until(lambda: "v1" not in kubectl("get", "pods", "-n", NS, "-o", "jsonpath={..image}"), 120,
                   "old pods gone")
        show("get", "pods", "-n", NS, "-o", "wide")

        say("7. what the operator recorded, and what the client saw")
        show("get", "events", "-n", NS, "--field-selector", "involvedObject.kind=ModelDeployment",
             "--sort-by=.lastTimestamp", "-o", "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message")
        names = {v: k for k, v in versions.items()}
        for version, row in sorted(load.by_version().items(), key=lambda kv: names.get(kv[0], kv[0])):
            print(f"  {names.get(version, 'no answer'):<10} answered {row['ok']:>5} ok, {row['failed']:>4} failed")
        failed_v3 = load.failures(since=t_v3)
        print(f"  failed requests from v3's apply to the end: {failed_v3 or 'none'}")
        ok = True
        return 0
    finally:
        if load is not None:
            load.stop()
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
