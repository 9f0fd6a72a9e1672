#!/usr/bin/env python3
"""`make bench-baseline`: the baseline checks on a real data plane - how much evidence, how fast.

The same real set-up as bench_canary.py (control plane, operator process, a real Prometheus
scraping real BentoML servers, a load generator of 40 req/s splitting by the reported weight,
varied rows), one stable v1 and four canaries, each judged only by baseline checks:

- drift: v4, trained on labels scaled 1.6x - 200 OK, fast, predictions 60 % high - against
  `prediction-drift` (max 0.2): fault onset -> weight 0, and the canary predictions it took;
- failing: a canary failing 80 % of requests against `error-rate` with `maxIncrease: 0.05` and
  `minRequests: 200`: the requests it took (fewer than minRequests is the point);
- incident: stable and canary both failing 20 % (a dependency they share is down), judged by
  `maxIncrease: 0.1`: promoted, never rolled back;
- healthy: v3 against `error-rate` (`maxIncrease: 0.02`) and `prediction-drift`: promoted.

Results: bench/results/baseline.json (each run, and per scenario the medians). BENCH_RUNS runs per
scenario (default 3), interleaved.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "hack"), str(Path(__file__).resolve().parent)]

from bench_canary import one_run  # noqa: E402
from kubernetes import client, config  # noqa: E402

from canarylab import new_namespace  # noqa: E402
from localcluster import LocalCluster, free_port  # noqa: E402
from localoperator import OperatorProcess  # noqa: E402

SCRAPE, INTERVAL, RUNS = "5s", "10s", int(os.environ.get("BENCH_RUNS", "3"))
DRIFT = {"name": "prediction-drift", "max": 0.2}
# scenario: (stable server, canary server, checks, minRequests, expected end)
SCENARIOS: dict[str, tuple[str, str, list[dict[str, Any]], int, str]] = {
    "drift": ("v1", "v4", [DRIFT], 10, "rolled back"),
    "failing": ("v1", "v2-80", [{"name": "error-rate", "maxIncrease": 0.05}], 200, "rolled back"),
    "incident": ("v1-20", "v2-20", [{"name": "error-rate", "maxIncrease": 0.1}], 20, "promoted"),
    "healthy": ("v1", "v3", [{"name": "error-rate", "maxIncrease": 0.02}, DRIFT], 10, "promoted"),
}


def evidence(record: dict[str, Any] | None) -> int | None:
    """The canary requests (error rate) or predictions (drift) the deciding analysis had seen."""
    if not record:
        return None
    m = re.search(r"over (\d+) canary predictions", record.get("message", "")) or \
        re.search(r"canary [\d.e+-]+ \(\d+ of (\d+)\)", record.get("message", ""))
    return int(m.group(1)) if m else None


def main() -> int:
    from modeldeploy_model.testing import build_test_artifact, serve_subprocess

    work = REPO / ".local" / "bench-baseline"
    work.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(state_dir=work / "cluster", node=False)
    servers: dict[str, Any] = {}
    op: OperatorProcess | None = None
    results: list[dict[str, Any]] = []
    try:
        cluster.up()
        cluster.install_crd(REPO / "crds", "modeldeployments.modeldeploy.io")
        op = OperatorProcess(str(cluster.kubeconfig), work / "operator.log", resync_seconds=30).start()
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        arts = {v: build_test_artifact(work / v, version_seed=int(v[1]), label_scale=1.6 if v == "v4" else 1.0)
                for v in ("v1", "v2", "v3", "v4")}
        for name in sorted({s for sc in SCENARIOS.values() for s in sc[:2]}):
            version, _, fault = name.partition("-")
            env = {"MODELDEPLOY_FAULT_ERROR_RATE": str(int(fault) / 100)} if fault else {}
            servers[name] = serve_subprocess(arts[version], port=free_port(), env=env, log_path=work / f"{name}.log")
        run_no = 0
        for _ in range(RUNS):
            for scenario, (stable, canary, checks, min_requests, _) in SCENARIOS.items():
                run_no += 1
                ns = f"bench-baseline-{run_no}"
                new_namespace(core, ns)
                r = one_run(custom, ns, servers[stable].url, servers[canary].url, scenario, "baseline", SCRAPE,
                            INTERVAL, 1, work / f"prom-{run_no}", metrics=checks, min_requests=min_requests)
                r["evidence"] = evidence(r["decided_by"])
                results.append(r)
                print(json.dumps(r), flush=True)
                core.delete_namespace(ns)
    finally:
        for s in servers.values():
            s.stop()
        if op is not None:
            op.stop()
        cluster.down(quiet=True)

    summary: dict[str, Any] = {}
    for scenario, (_, _, checks, min_requests, expected) in SCENARIOS.items():
        rs = [r for r in results if r["canary"] == scenario]
        t = [r["fault_to_weight0_s"] for r in rs if r["fault_to_weight0_s"] is not None]
        tp = [r["apply_to_promoted_s"] for r in rs if r["apply_to_promoted_s"] is not None]
        ev = [r["evidence"] for r in rs if r["evidence"] is not None]
        summary[scenario] = {
            "checks": checks, "min_requests": min_requests, "expected": expected, "runs": len(rs),
            "rolled_back": sum(r["rolled_back"] for r in rs), "promoted": sum(r["promoted"] for r in rs),
            "onset_to_weight0_median_s": round(statistics.median(t), 1) if t else None,
            "onset_to_weight0_max_s": round(max(t), 1) if t else None,
            "evidence_at_decision_median": statistics.median(ev) if ev else None,
            "apply_to_promoted_median_s": round(statistics.median(tp), 1) if tp else None,
        }
    out = {"benchmark": "baseline checks: evidence and time to decide", "scrape_interval": SCRAPE,
           "interval": INTERVAL, "load_per_second": 40, "runs": results, "summary": summary,
           "machine": {"cpus": os.cpu_count()}, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    dest = REPO / "bench" / "results" / "baseline.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written: {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
