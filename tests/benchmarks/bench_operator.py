#!/usr/bin/env python3
"""`make bench-operator`: N ModelDeployments created in a burst, on the real local control plane.

Measures, for N = 100 and N = 500: time until all are Ready, per-object apply -> Ready latency
(p50/p99, from the create call returning to a watch seeing Ready=True), API writes per object
(the operator's own `modeldeploy_api_writes_total`), the operator's peak RSS (VmHWM), and the
writes during two resync periods after everything is Ready (should be zero).
Results: bench/results/operator.json. Targets: p99 < 2 s at N=100, all 500 Ready < 60 s,
RSS < 200 MiB, <= 5 writes per object, 0 writes per idle resync.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "hack")]

from kubernetes import client, config, watch  # noqa: E402

from canarylab import new_namespace  # noqa: E402
from localcluster import LocalCluster  # noqa: E402
from localoperator import OperatorProcess  # noqa: E402

SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "100,500").split(",")]
RESYNC = 15.0


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def run(n: int, api: client.ApiClient, op: OperatorProcess) -> dict[str, Any]:
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    ns = f"bench-{n}"
    new_namespace(core, ns)
    created: dict[str, float] = {}
    ready: dict[str, float] = {}
    done = threading.Event()

    def watcher() -> None:
        w = watch.Watch()
        for ev in w.stream(custom.list_namespaced_custom_object, "modeldeploy.io", "v1alpha1", ns,
                           "modeldeployments", timeout_seconds=300):
            obj = ev["object"]
            name = obj["metadata"]["name"]
            conds = (obj.get("status") or {}).get("conditions") or []
            if name not in ready and any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                ready[name] = time.monotonic()
                if len(ready) >= n:
                    done.set()
                    w.stop()
                    return

    t = threading.Thread(target=watcher, daemon=True)
    t.start()
    time.sleep(0.5)  # let the watch establish before the burst
    writes_before = op.writes()

    def create(i: int) -> None:
        name = f"m{i:04d}"
        body = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
                "spec": {"model": {"image": f"registry.example/m:{i}"}, "replicas": 1}}
        custom.create_namespaced_custom_object("modeldeploy.io", "v1alpha1", ns, "modeldeployments", body)
        created[name] = time.monotonic()

    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(n)))
    t_created = time.monotonic() - t0
    finished = done.wait(timeout=300)
    all_ready = (max(ready.values()) - t0) if ready else None
    latencies = [ready[k] - created[k] for k in ready if k in created]
    writes_to_ready = op.writes() - writes_before
    # Server-side view (1 s resolution, no client lag): Ready's lastTransitionTime - creationTimestamp.
    server_lat = []
    for obj in custom.list_namespaced_custom_object("modeldeploy.io", "v1alpha1", ns, "modeldeployments")["items"]:
        ready_c = [c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == "Ready"]
        if ready_c and ready_c[0]["status"] == "True":
            t_made = datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
            t_ready = datetime.fromisoformat(ready_c[0]["lastTransitionTime"].replace("Z", "+00:00"))
            server_lat.append((t_ready - t_made).total_seconds())
    # Idle: two resync periods with nothing changing must cost zero writes.
    idle_before = op.writes()
    reconciles_before = op.counter('modeldeploy_reconciles_total{result="ok"}')
    time.sleep(2 * RESYNC + 2)
    idle_writes = op.writes() - idle_before
    idle_reconciles = op.counter('modeldeploy_reconciles_total{result="ok"}') - reconciles_before
    result = {
        "n": n, "all_ready": finished, "ready_count": len(ready), "create_burst_s": round(t_created, 2),
        "all_ready_s": round(all_ready, 2) if all_ready else None,
        "apply_to_ready_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "apply_to_ready_p99_s": round(pct(latencies, 99), 3) if latencies else None,
        "server_side_ready_p50_s": statistics.median(server_lat) if server_lat else None,
        "server_side_ready_p99_s": pct(server_lat, 99) if server_lat else None,
        "writes_per_object": round(writes_to_ready / n, 2),
        "idle_resync_reconciles": int(idle_reconciles), "idle_resync_writes": int(idle_writes),
        "operator_peak_rss_mib": round(peak_rss_mib(op.proc.pid), 1) if op.proc else None,
    }
    core.delete_namespace(ns)
    return result


def main() -> int:
    work = REPO / ".local" / "bench-operator"
    work.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(state_dir=work / "cluster", node=False)
    op: OperatorProcess | None = None
    results = []
    try:
        cluster.up()
        cluster.install_crd(REPO / "crds", "modeldeployments.modeldeploy.io")
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        api.configuration.connection_pool_maxsize = 32
        for n in SIZES:
            # A fresh operator per size, so peak RSS and write counts belong to that run.
            op = OperatorProcess(str(cluster.kubeconfig), work / f"operator-{n}.log", resync_seconds=RESYNC).start()
            results.append(run(n, api, op))
            print(json.dumps(results[-1]), flush=True)
            op.stop()
            op = None
        rss = cluster.rss_mib()
    finally:
        if op is not None:
            op.stop()
        cluster.down(quiet=True)
    out = {"benchmark": "operator burst", "results": results,
           "control_plane_rss_mib_after": {k: round(v, 1) for k, v in rss.items()},
           "machine": {"cpus": os.cpu_count()}, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    dest = REPO / "bench" / "results" / "operator.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written: {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
