#!/usr/bin/env python3
"""`make demo`: the whole product on one machine, every component real.

1. a local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) and the CRD;
2. the operator; a ModelDeployment (v1, autoscaled) reaching Ready with its children;
3. real BentoML servers standing in for the stable and canary pods (kwok pods run no
   containers), a real Prometheus scraping them with the track labels, and a load generator
   splitting traffic in the weight the operator sets;
4. v2 with 30 % injected 5xx goes canary and is rolled back automatically;
5. v3, healthy, goes canary and is promoted through every step.

Everything started is stopped at the end (KEEP=1 leaves the cluster and operator running).
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

from canarylab import LoadGenerator, targets  # noqa: E402
from localcluster import LocalCluster, free_port, wait_until  # noqa: E402
from localoperator import OperatorProcess  # noqa: E402
from localprom import PrometheusServer  # noqa: E402

BOLD, DIM, RED, GREEN, RESET = "\033[1m", "\033[2m", "\033[31m", "\033[32m", "\033[0m"
NAME = "room-price"


def say(text: str) -> None:
    print(f"\n{BOLD}==> {text}{RESET}", flush=True)


def kubectl(*args: str, check: bool = True) -> str:
    out = subprocess.run(["kubectl", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def show(*args: str) -> None:
    print(kubectl(*args), end="", flush=True)


def get_md() -> dict[str, Any]:
    return json.loads(kubectl("get", "mdep", NAME, "-o", "json"))  # type: ignore[no-any-return]


def follow(until: Any, timeout: float) -> dict[str, Any]:
    """Print a line whenever phase, step, weight or the newest analysis changes; stop when `until(status)`."""
    deadline = time.monotonic() + timeout
    last = None
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        st = get_md().get("status", {})
        a = (st.get("lastAnalysis") or [{}])[0]
        key = (st.get("phase"), st.get("currentStep"), st.get("canaryWeight"), a.get("time"), a.get("metric"))
        if key != last:
            last = key
            ana = ""
            if a:
                value = "-" if a.get("value") is None else f"{a['value']:.3g}"
                colour = RED if a.get("verdict") in ("Fail", "Error") else GREEN if a.get("verdict") == "Pass" else ""
                ana = f"  last analysis: {a.get('metric')}={value} {colour}{a.get('verdict')}{RESET}"
            print(f"  {time.monotonic() - t0:5.1f}s  {st.get('phase', ''):<11} step {st.get('currentStep', 0)}  "
                  f"canary weight {st.get('canaryWeight', 0):>3}%{ana}", flush=True)
        if until(st):
            return st
        time.sleep(0.3)
    raise SystemExit("timed out following the rollout")


def main() -> int:
    keep = os.environ.get("KEEP") == "1"
    work = Path(tempfile.mkdtemp(prefix="modeldeploy-demo-"))
    cluster = LocalCluster()
    operator: OperatorProcess | None = None
    servers: list[Any] = []
    prom: PrometheusServer | None = None
    load: LoadGenerator | None = None
    ok = False
    try:
        say("1. local control plane: etcd, kube-apiserver, controller-manager, scheduler, kwok (127.0.0.1 only)")
        secs = cluster.up()
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        print(f"node Ready after {secs:.1f}s" if secs else "reusing the running cluster")
        show("get", "nodes")
        say("2. install the ModelDeployment CRD")
        cluster.install_crd(REPO / "crds", "modeldeployments.modeldeploy.io")
        show("get", "crd", "modeldeployments.modeldeploy.io")

        say(f"3. start the operator (log: {work / 'operator.log'})")
        operator = OperatorProcess(str(cluster.kubeconfig), work / "operator.log", resync_seconds=10,
                                   extra_env={"MODELDEPLOY_LOG_FORMAT": "plain"}).start()
        print(f"operator ready; its metrics: {operator.url}/metrics")

        say("4. real model servers: train three small model versions and serve them with `bentoml serve`")
        from modeldeploy_model.testing import build_test_artifact, serve_subprocess

        arts = {v: build_test_artifact(work / v, version_seed=i) for i, v in enumerate(("v1", "v2", "v3"), 1)}
        for v, env_ in (("v1", {}), ("v2", {"MODELDEPLOY_FAULT_ERROR_RATE": "0.3"}), ("v3", {})):
            servers.append(serve_subprocess(arts[v], port=free_port(), env=env_, log_path=work / f"{v}.log"))
            print(f"  {v}: {servers[-1].url}" + ("  (30% of /predict answer 500: injected fault)" if env_ else ""))
        stable_srv, faulty_srv, good_srv = servers
        ns = "default"
        prom = PrometheusServer(targets(ns, NAME, stable_srv.url, faulty_srv.url), scrape_interval="1s",
                                workdir=work / "prom")
        (work / "prom").mkdir()
        prom.start()
        print(f"  Prometheus {prom.url} scrapes them as track=stable (v1) and track=canary")

        say("5. v1: apply a ModelDeployment (autoscaled, canary steps 20/50/80 every 5s, Prometheus analysis)")
        manifest = {
            "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": NAME},
            "spec": {
                "model": {"image": "registry.example/room-price:v1", "bento": "room_price:v1"},
                "autoscaling": {"minReplicas": 2, "maxReplicas": 6},
                "rollout": {"strategy": "Canary", "canary": {"steps": [20, 50, 80], "interval": "5s"},
                            "analysis": {"prometheus": {"address": prom.url}, "minRequests": 10, "failureLimit": 1,
                                         "metrics": [{"name": "error-rate", "max": 0.05},
                                                     {"name": "latency-p99", "max": 0.5}]}},
            },
        }
        (work / "mdep.yaml").write_text(json.dumps(manifest, indent=2))
        show("apply", "-f", str(work / "mdep.yaml"))
        wait_until(lambda: get_md().get("status", {}).get("phase") == "Healthy", 120, "v1 Healthy")
        show("get", "mdep,deploy,svc,hpa,pods")
        wait_until(prom.targets_up, 30, "Prometheus scraping both servers")

        def weight() -> int:
            return int(get_md().get("status", {}).get("canaryWeight", 0))

        load = LoadGenerator(stable_srv.url, faulty_srv.url, weight=weight, rate_per_second=40,
                             max_seconds=240).start()
        print("  load generator: 40 req/s, split by .status.canaryWeight")

        say("6. v2 (faulty): the canary gets traffic, analysis sees the errors, the operator rolls back")
        t0 = time.monotonic()
        kubectl("patch", "mdep", NAME, "--type=merge", "-p",
                json.dumps({"spec": {"model": {"image": "registry.example/room-price:v2", "bento": "room_price:v2"}}}))
        st = follow(lambda s: s.get("phase") in ("RolledBack", "Failed"), 120)
        print(f"{RED}  rolled back {time.monotonic() - t0:.1f}s after v2 was applied:{RESET} {st.get('message')}")
        subprocess.run([sys.executable, "-m", "modeldeploy.cli", "status", NAME], check=False)

        say("7. v3 (healthy): promoted step by step")
        load.canary_url = good_srv.url
        prom.targets = targets(ns, NAME, stable_srv.url, good_srv.url)
        prom.reload()
        t0 = time.monotonic()
        kubectl("patch", "mdep", NAME, "--type=merge", "-p",
                json.dumps({"spec": {"model": {"image": "registry.example/room-price:v3", "bento": "room_price:v3"}}}))
        st = follow(lambda s: s.get("phase") == "Healthy" and (s.get("stable") or {}).get("bento") == "room_price:v3",
                    150)
        print(f"{GREEN}  promoted {time.monotonic() - t0:.1f}s after v3 was applied{RESET}")
        subprocess.run([sys.executable, "-m", "modeldeploy.cli", "status", NAME], check=False)
        show("get", "mdep,deploy,hpa")

        say("8. what the operator recorded")
        show("get", "events", "--field-selector", "involvedObject.kind=ModelDeployment", "--sort-by=.lastTimestamp",
             "-o", "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message")
        print(f"  requests sent: {load.sent}, 5xx seen: {load.errors}")
        ok = True
        return 0
    finally:
        if load is not None:
            load.stop()
        for s in servers:
            s.stop()
        if prom is not None:
            prom.stop()
        if keep and ok:
            say(f"left running: export KUBECONFIG={cluster.kubeconfig}")
            pid = operator.proc.pid if operator and operator.proc else "-"
            print(f"operator pid {pid}; stop with: kill {pid}; make cluster-down")
        else:
            say("stopping everything the demo started")
            if operator is not None:
                operator.stop()
            cluster.down(quiet=True)
            if not ok:
                print(f"demo failed; logs in {work}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
