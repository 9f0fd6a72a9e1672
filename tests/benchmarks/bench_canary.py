#!/usr/bin/env python3
"""`make bench-canary`: how fast does a faulty canary lose its traffic, and is a healthy one promoted?

Real everything: the local control plane, the operator, a real Prometheus scraping real
BentoML servers (the faulty canary answers 50 % of /predict with HTTP 500, the healthy one
none), and a load generator that splits traffic in the weight the operator reports. For each
settings profile, interleaved, faulty and healthy runs:

- faulty: from *fault onset* (the first request the canary serves) to the operator setting the
  canary weight to 0. With fail fast, the in-step measurements (analysis.measurementInterval,
  default 5 s) roll back as soon as the error rate is certainly above the threshold, so the
  time is about one scrape interval plus one measurement period, whatever the step interval.
  The floor before fail fast (the step's analysis at its end) is given for comparison:
      floor ~= scrape interval + analysis interval + window x threshold / error ratio
- healthy: from the apply to the promotion; a healthy canary rolled back is counted.

Results: bench/results/canary.json (the previous figures, before fail fast, are kept beside them).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "hack")]

from kubernetes import client, config  # noqa: E402

from canarylab import LoadGenerator, new_namespace, targets  # noqa: E402
from localcluster import LocalCluster, free_port, wait_until  # noqa: E402
from localoperator import OperatorProcess  # noqa: E402
from localprom import PrometheusServer  # noqa: E402
from modeldeploy.api import parse_duration  # noqa: E402

PROFILES = [
    # name, scrape interval, analysis interval, failureLimit, runs (each: one faulty, one healthy canary)
    ("fast", "5s", "10s", 1, int(os.environ.get("BENCH_RUNS", "5"))),
    ("default", "15s", "30s", 1, int(os.environ.get("BENCH_RUNS", "5"))),
]
ERROR_RATE, THRESHOLD = 0.5, 0.05
# Median fault onset -> weight 0 before fail fast (bench/results/canary.json of 2026-11-26).
BEFORE_FAIL_FAST = {"fast": 9.8, "default": 29.7}


def floor_seconds(scrape: str, interval: str, failure_limit: int) -> float:
    s, i = parse_duration(scrape), parse_duration(interval)
    return s + i * failure_limit + i * THRESHOLD / ERROR_RATE


def main() -> int:
    from modeldeploy_model.testing import build_test_artifact, serve_subprocess

    work = REPO / ".local" / "bench-canary"
    work.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(state_dir=work / "cluster", node=False)
    servers: list[Any] = []
    op: OperatorProcess | None = None
    results: list[dict[str, Any]] = []
    try:
        cluster.up()
        cluster.install_crd(REPO / "crds", "modeldeployments.modeldeploy.io")
        op = OperatorProcess(str(cluster.kubeconfig), work / "operator.log", resync_seconds=30).start()
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        v1 = build_test_artifact(work / "v1", version_seed=1)
        v2 = build_test_artifact(work / "v2", version_seed=2)
        stable = serve_subprocess(v1, port=free_port(), log_path=work / "stable.log")
        servers.append(stable)
        faulty = serve_subprocess(v2, port=free_port(), env={"MODELDEPLOY_FAULT_ERROR_RATE": str(ERROR_RATE)},
                                  log_path=work / "faulty.log")
        servers.append(faulty)
        healthy = serve_subprocess(v2, port=free_port(), log_path=work / "healthy.log")
        servers.append(healthy)

        run_no = 0
        for profile, scrape, interval, failure_limit, runs in PROFILES:
            for _ in range(runs):
                for kind, canary_url in (("faulty", faulty.url), ("healthy", healthy.url)):
                    run_no += 1
                    ns = f"bench-canary-{run_no}"
                    new_namespace(core, ns)
                    results.append(one_run(custom, ns, stable.url, canary_url, kind, profile, scrape, interval,
                                           failure_limit, work / f"prom-{run_no}"))
                    print(json.dumps(results[-1]), flush=True)
                    core.delete_namespace(ns)
    finally:
        for s in servers:
            s.stop()
        if op is not None:
            op.stop()
        cluster.down(quiet=True)

    summary: dict[str, Any] = {"error_rate_injected": ERROR_RATE, "threshold": THRESHOLD, "profiles": {}}
    for profile, scrape, interval, failure_limit, _ in PROFILES:
        rs = [r for r in results if r["profile"] == profile and r["canary"] == "faulty"]
        hs = [r for r in results if r["profile"] == profile and r["canary"] == "healthy"]
        t = [r["fault_to_weight0_s"] for r in rs if r["fault_to_weight0_s"] is not None]
        tp = [r["apply_to_promoted_s"] for r in hs if r["apply_to_promoted_s"] is not None]
        fl = floor_seconds(scrape, interval, failure_limit)
        summary["profiles"][profile] = {
            "scrape_interval": scrape, "interval": interval, "failure_limit": failure_limit,
            "faulty_runs": len(rs), "healthy_runs": len(hs),
            "floor_before_fail_fast_s": round(fl, 1), "median_before_fail_fast_s": BEFORE_FAIL_FAST.get(profile),
            "median_s": round(statistics.median(t), 1) if t else None,
            "max_s": round(max(t), 1) if t else None,
            "faulty_canary_requests_median": statistics.median([r["canary_requests"] for r in rs]) if rs else None,
            "faulty_canary_5xx_median": statistics.median([r["canary_5xx"] for r in rs]) if rs else None,
            "promotions_of_faulty_canary": sum(r["promoted"] for r in rs),
            "faulty_rolled_back": sum(r["rolled_back"] for r in rs),
            "healthy_promoted": sum(r["promoted"] for r in hs),
            "healthy_rolled_back": sum(r["rolled_back"] for r in hs),
            "healthy_apply_to_promoted_median_s": round(statistics.median(tp), 1) if tp else None,
        }
    out = {"benchmark": "canary time-to-rollback", "runs": results, "summary": summary,
           "machine": {"cpus": os.cpu_count()}, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    dest = REPO / "bench" / "results" / "canary.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written: {dest}")
    return 0


def one_run(custom: client.CustomObjectsApi, ns: str, stable_url: str, canary_url: str, kind: str, profile: str,
            scrape: str, interval: str, failure_limit: int, prom_dir: Path,
            metrics: list[dict[str, Any]] | None = None, min_requests: int = 10) -> dict[str, Any]:
    """One canary of `canary_url` against `stable_url`; rolled-back runs time fault onset -> weight 0 and
    record the analysis that decided (bench_baseline.py reuses this with its own checks)."""
    name = "price"
    prom_dir.mkdir(parents=True, exist_ok=True)
    prom = PrometheusServer(targets(ns, name, stable_url, canary_url), scrape_interval=scrape, workdir=prom_dir)
    prom.start()
    load: LoadGenerator | None = None

    def status() -> dict[str, Any]:
        return custom.get_namespaced_custom_object("modeldeploy.io", "v1alpha1", ns, "modeldeployments", name).get(
            "status", {})

    try:
        body = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
                "spec": {"model": {"image": "registry.example/p:v1", "bento": "p:v1"}, "replicas": 2,
                         "rollout": {"strategy": "Canary", "canary": {"steps": [25, 50, 75], "interval": interval},
                                     "analysis": {"prometheus": {"address": prom.url}, "minRequests": min_requests,
                                                  "failureLimit": failure_limit,
                                                  "metrics": metrics or [{"name": "error-rate", "max": THRESHOLD}]}}}}
        custom.create_namespaced_custom_object("modeldeploy.io", "v1alpha1", ns, "modeldeployments", body)
        wait_until(lambda: status().get("phase") == "Healthy", 60, "v1 Healthy")
        wait_until(prom.targets_up, 60, "both servers scraped")
        load = LoadGenerator(stable_url, canary_url, weight=lambda: int(status().get("canaryWeight", 0)),
                             rate_per_second=40, max_seconds=400).start()
        applied = time.monotonic()
        custom.patch_namespaced_custom_object("modeldeploy.io", "v1alpha1", ns, "modeldeployments", name,
                                              {"spec": {"model": {"image": "registry.example/p:v2", "bento": "p:v2"}}})
        onset = None
        end = None
        promoted = rolled_back = False
        deadline = time.monotonic() + 360
        while time.monotonic() < deadline:
            st = status()
            if onset is None and load.sent["canary"] > 0:
                onset = time.monotonic()
            if onset is not None and st.get("canary") is None and int(st.get("canaryWeight", 0)) == 0:
                end = time.monotonic()
                rolled_back = st.get("phase") in ("RolledBack", "Failed")
                promoted = (st.get("stableModel") or {}).get("bento") == "p:v2"
                break
            time.sleep(0.1)
        final = status()
        decided = next((a for a in final.get("lastAnalysis") or [] if a.get("verdict") == "Fail"), None)
        return {"profile": profile, "canary": kind, "namespace": ns, "scrape_interval": scrape, "interval": interval,
                "failure_limit": failure_limit,
                "fault_to_weight0_s": round(end - onset, 2) if onset and end and rolled_back else None,
                "decided_by": decided,
                "apply_to_promoted_s": round(end - applied, 2) if end and promoted else None,
                "rolled_back": rolled_back, "promoted": promoted, "canary_requests": load.sent["canary"],
                "canary_5xx": load.errors["canary"], "message": final.get("message", "")}
    finally:
        if load is not None:
            load.stop()
        prom.stop()


if __name__ == "__main__":
    sys.exit(main())
