#!/usr/bin/env python3
"""`make bench-operator`: N ModelDeployments created in a burst, on the real local control plane.

Three cases, in one run on one cluster (kwok's fake node; no pod runs a container):
- floor: N plain Deployments (the operator's own pod template, the same namespace setup, no
  operator) to all Available: what this control plane can do at all; and the same with the
  operator's ClusterIP Service for each (the API server allocates ClusterIPs one at a time, so
  the Services bound a burst of them: see the create pool in controller/executor.py);
- burst: N ModelDeployments to all Ready, for N = 100 and N = 500: time until all are Ready,
  per-object apply -> Ready latency (p50/p99, from the create call returning to a watch seeing
  Ready=True), the ratio to the floor, API writes per object (`modeldeploy_api_writes_total`),
  the operator's RSS (VmHWM and current) and CPU seconds, and the writes during two resync
  periods after everything is Ready (should be zero);
- unrelated: 5,000 Deployments (replicas 0) and 5,000 Services that are not ours, then 100
  ModelDeployments: the same figures, to compare with the empty cluster's (the operator must
  watch only its own objects).
Results: bench/results/operator.json. Targets: operator <= 1.5x the floor at N=100 and 500,
RSS with the unrelated objects within 10 % of the empty cluster's, RSS < 200 MiB,
<= 5 writes per object, 0 writes per idle resync.
`BENCH_PROFILE=1` records a py-spy profile of the operator during each burst
(.local/bench-operator/profile-N.txt: the hottest frames, own and total).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "hack")]

from kubernetes import client, config, watch  # noqa: E402

from canarylab import new_namespace  # noqa: E402
from localcluster import LocalCluster, wait_until  # noqa: E402
from localoperator import OperatorProcess  # noqa: E402
from modeldeploy.api import ModelDeployment  # noqa: E402
from modeldeploy.resources.deployment import build_deployment  # noqa: E402
from modeldeploy.resources.service import build_service  # noqa: E402

SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "100,500").split(",") if n]  # "" skips the bursts
UNRELATED = int(os.environ.get("BENCH_UNRELATED", "5000"))  # of each kind; 0 skips the case
UNRELATED_N = 100
PROFILE = os.environ.get("BENCH_PROFILE", "") == "1"
RESYNC = 15.0
WORK = REPO / ".local" / "bench-operator"


def proc_status_mib(pid: int, field: str) -> float:
    """VmHWM (peak) or VmRSS (current) of `pid`, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def md_body(i: int) -> dict[str, Any]:
    return {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": f"m{i:04d}"},
            "spec": {"model": {"image": f"registry.example/m:{i}"}, "replicas": 1}}


def floor_object(build: Any, ns: str, i: int) -> dict[str, Any]:
    """What `build` (build_deployment, build_service) makes for md_body(i), without the owner
    reference (nothing owns it)."""
    body = md_body(i)
    body["metadata"].update(namespace=ns, uid="00000000-0000-0000-0000-000000000000")
    obj: dict[str, Any] = build(ModelDeployment.model_validate(body))
    obj["metadata"].pop("ownerReferences", None)
    return obj


def available(dep: dict[str, Any]) -> bool:
    spec, st = dep.get("spec") or {}, dep.get("status") or {}
    want = spec.get("replicas", 1)
    return (st.get("observedGeneration", 0) >= dep["metadata"].get("generation", 1)
            and st.get("updatedReplicas", 0) == want and st.get("availableReplicas", 0) == want)


class ApiServerRequests:
    """What the API server spent on requests during a case, by verb and resource (and subresource):
    count and mean duration, from its own `apiserver_request_duration_seconds` (all clients)."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, list[float]]:
        status, text = self.cluster.api_get("/metrics", timeout=30)
        out: dict[str, list[float]] = {}
        if status != 200:
            return out
        for line in text.splitlines():
            for suffix, i in (("_sum{", 0), ("_count{", 1)):
                if line.startswith("apiserver_request_duration_seconds" + suffix):
                    labels = dict(re.findall(r'(\w+)="([^"]*)"', line[:line.rindex("}")]))
                    if labels.get("verb") in ("WATCH", "CONNECT"):
                        continue
                    res = labels.get("resource", "") + ("/" + labels["subresource"] if labels.get("subresource")
                                                         else "")
                    key = f"{labels.get('verb')} {res}"
                    out.setdefault(key, [0.0, 0.0])[i] += float(line.rsplit(" ", 1)[1])
        return out

    def delta(self, top: int = 12) -> dict[str, dict[str, float]]:
        after = self.snapshot()
        rows = {k: (v[0] - self.before.get(k, [0.0, 0.0])[0], v[1] - self.before.get(k, [0.0, 0.0])[1])
                for k, v in after.items()}
        busiest = sorted(((k, s, c) for k, (s, c) in rows.items() if c > 0), key=lambda r: -r[1])[:top]
        return {k: {"count": int(c), "mean_s": round(s / c, 3), "total_s": round(s, 1)} for k, s, c in busiest}


def delete_namespace(core: client.CoreV1Api, ns: str, timeout: float = 300) -> None:
    """Delete and wait until it is gone, so its teardown does not load the next measurement."""
    core.delete_namespace(ns)

    def gone() -> bool:
        try:
            core.read_namespace(ns)
            return False
        except client.ApiException as e:
            return e.status == 404

    wait_until(gone, timeout, what=f"namespace {ns} deleted", interval=1.0)


class Profiler:
    """py-spy attached to the operator for the length of a burst (BENCH_PROFILE=1)."""

    def __init__(self, pid: int, name: str) -> None:
        self.raw = WORK / f"profile-{name}.raw"
        self.out = WORK / f"profile-{name}.txt"
        self.proc: subprocess.Popen[bytes] | None = None
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if PROFILE:
            self.proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "100", "--format", "raw",
                                          "--output", str(self.raw), "--threads"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # attached before the burst starts

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(2)  # SIGINT: py-spy writes the profile and exits
        self.proc.wait(timeout=60)
        self.out.write_text(summarise_profile(self.raw))


def summarise_profile(raw: Path, top: int = 40) -> str:
    """The hottest frames of a py-spy raw (collapsed) profile: own samples and total samples."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    threads: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        threads[frames[0]] = threads.get(frames[0], 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames[1:]):
            total[f] = total.get(f, 0) + n
    lines = [f"{samples} samples (100/s, all threads)", "", "by thread:"]
    lines += [f"  {n:7d} {t}" for t, n in sorted(threads.items(), key=lambda kv: -kv[1])[:top]]
    lines += ["", "own samples:"]
    lines += [f"  {n:7d} {f}" for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]]
    lines += ["", "total samples:"]
    lines += [f"  {n:7d} {f}" for f, n in sorted(total.items(), key=lambda kv: -kv[1])[:top]]
    return "\n".join(lines) + "\n"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def burst(api: client.ApiClient, n: int, stream: Any, create: Any, is_ready: Any,
          created_wall: dict[str, float] | None = None) -> dict[str, Any]:
    """Create `n` objects with `create(i) -> name` from 16 threads; a watch (`stream`: a list function
    and its arguments) sees each become ready (`is_ready(obj)`). Timings from the first create call;
    `created_wall` gets each object's create time on the wall clock (to match with log lines)."""
    created: dict[str, float] = {}
    wall = created_wall if created_wall is not None else {}
    ready: dict[str, float] = {}
    done = threading.Event()

    def seen(obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if name not in ready and is_ready(obj):
            ready[name] = time.monotonic()
            if len(ready) >= n:
                done.set()

    def watcher() -> None:
        # A loaded API server may close a watch early: list again (what became ready meanwhile is
        # timed at the list) and watch on from the list's resourceVersion, until done or 300 s.
        deadline = time.monotonic() + 300
        func, *args = stream
        rv = None
        while not done.is_set() and time.monotonic() < deadline:
            if rv is not None:
                listed = api.sanitize_for_serialization(func(*args))
                for obj in listed["items"]:
                    seen(obj)
                rv = listed["metadata"]["resourceVersion"]
            w = watch.Watch()
            try:
                for ev in w.stream(func, *args, resource_version=rv or "", timeout_seconds=60):
                    if ev["type"] in ("ADDED", "MODIFIED"):
                        seen(ev["raw_object"])  # the JSON as sent, whatever the function's model type
                    if done.is_set():
                        w.stop()
                        return
            except client.ApiException as e:
                if e.status != 410:
                    raise
            rv = rv or ""

    t = threading.Thread(target=watcher, daemon=True)
    t.start()
    time.sleep(0.5)  # let the watch establish before the burst

    def one(i: int) -> None:
        name = create(i)
        created[name] = time.monotonic()
        wall[name] = time.time()

    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n)))
    t_created = time.monotonic() - t0
    finished = done.wait(timeout=300)
    all_ready = (max(ready.values()) - t0) if ready else None
    latencies = [ready[k] - created[k] for k in ready if k in created]
    return {
        "n": n, "all_ready": finished, "ready_count": len(ready), "create_burst_s": round(t_created, 2),
        "all_ready_s": round(all_ready, 2) if all_ready else None,
        "apply_to_ready_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "apply_to_ready_p99_s": round(pct(latencies, 99), 3) if latencies else None,
    }


def run_floor(n: int, api: client.ApiClient, cluster: LocalCluster, services: bool = False) -> dict[str, Any]:
    """N plain Deployments, no operator: the control plane's own time to make them Available.
    With `services`, each also gets the operator's ClusterIP Service (created right after its
    Deployment, from the same thread), and all are done when every Deployment is Available and
    every Service created: the same objects the operator makes, without the operator."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    ns = f"floor-{n}" + ("-svc" if services else "")
    new_namespace(core, ns)

    def create(i: int) -> str:
        dep = floor_object(build_deployment, ns, i)
        apps.create_namespaced_deployment(ns, dep)
        if services:
            core.create_namespaced_service(ns, floor_object(build_service, ns, i))
        return str(dep["metadata"]["name"])

    server = ApiServerRequests(cluster)
    result = burst(api, n, (apps.list_namespaced_deployment, ns), create, available)
    if services and result["all_ready_s"] is not None:  # the last Service may come after the last pod
        result["all_ready_s"] = max(result["all_ready_s"], result["create_burst_s"])
    result["apiserver_requests"] = server.delta()
    delete_namespace(core, ns)
    return result


def run_operator(n: int, api: client.ApiClient, cluster: LocalCluster, op: OperatorProcess, name: str,
                 idle: bool = True) -> dict[str, Any]:
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    ns = f"bench-{name}"
    new_namespace(core, ns)
    assert op.proc is not None
    pid = op.proc.pid
    rss_start, cpu_start = proc_status_mib(pid, "VmRSS"), cpu_seconds(pid)
    writes_before = op.writes()

    def create(i: int) -> str:
        body = md_body(i)
        custom.create_namespaced_custom_object("modeldeploy.io", "v1alpha1", ns, "modeldeployments", body)
        return str(body["metadata"]["name"])

    def is_ready(obj: Any) -> bool:
        conds = (obj.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    created_wall: dict[str, float] = {}
    log_start = op.log_path.stat().st_size
    profiler = Profiler(pid, name)
    server = ApiServerRequests(cluster)
    try:
        result = burst(api, n, (custom.list_namespaced_custom_object, "modeldeploy.io", "v1alpha1", ns,
                               "modeldeployments"), create, is_ready, created_wall)
    finally:
        profiler.stop()
    result["timeline"] = timeline(op.log_path, ns, created_wall, log_start)
    reasons: dict[str, int] = {}
    for ev in core.list_namespaced_event(ns).items:
        key = f"{ev.involved_object.kind}/{ev.reason}"
        reasons[key] = reasons.get(key, 0) + (ev.count or 1)
    result["events_by_reason"] = dict(sorted(reasons.items(), key=lambda kv: -kv[1]))
    result["apiserver_requests"] = server.delta()
    cpu_burst = cpu_seconds(pid) - cpu_start
    writes_to_ready = op.writes() - writes_before
    # Server-side view (1 s resolution, no client lag): Ready's lastTransitionTime - creationTimestamp.
    server_lat = []
    for obj in custom.list_namespaced_custom_object("modeldeploy.io", "v1alpha1", ns, "modeldeployments")["items"]:
        ready_c = [c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == "Ready"]
        if ready_c and ready_c[0]["status"] == "True":
            t_made = datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
            t_ready = datetime.fromisoformat(ready_c[0]["lastTransitionTime"].replace("Z", "+00:00"))
            server_lat.append((t_ready - t_made).total_seconds())
    result.update({
        "server_side_ready_p50_s": statistics.median(server_lat) if server_lat else None,
        "server_side_ready_p99_s": pct(server_lat, 99) if server_lat else None,
        "writes_per_object": round(writes_to_ready / n, 2),
        "operator_rss_at_start_mib": round(rss_start, 1),
        "operator_cpu_burst_s": round(cpu_burst, 2),
    })
    if idle:
        # Idle: two resync periods with nothing changing must cost zero writes.
        idle_before = op.writes()
        reconciles_before = op.counter('modeldeploy_reconciles_total{result="ok"}')
        time.sleep(2 * RESYNC + 2)
        result["idle_resync_reconciles"] = int(op.counter('modeldeploy_reconciles_total{result="ok"}')
                                               - reconciles_before)
        result["idle_resync_writes"] = int(op.writes() - idle_before)
    result.update({
        "operator_cpu_total_s": round(cpu_seconds(pid), 2),
        "operator_peak_rss_mib": round(proc_status_mib(pid, "VmHWM"), 1),
        "operator_rss_mib": round(proc_status_mib(pid, "VmRSS"), 1),
    })
    delete_namespace(core, ns)
    return result


# Operator log lines (JSON, see modeldeploy.logs) that mark an object's way to Ready.
# Each starts "<namespace>/<name>: " (controller/executor.py).
STAGES = {stage: re.compile(r"^(?P<ns>[^/ ]+)/(?P<name>[^:]+): " + rest) for stage, rest in {
    "first_pass": r"\w+ -> ", "deployment_created": "created Deployment ", "service_created": "created Service ",
    "healthy": r"\w+ -> Healthy"}.items()}


def timeline(log: Path, ns: str, created_wall: dict[str, float], offset: int = 0) -> dict[str, Any]:
    """Where an object's time to Ready goes, from the operator's own log: seconds from the create
    call returning to its first reconcile's status write (queue wait), its Deployment created, its
    Service created (in the background) and the status write that says Healthy; p50/p90 over objects."""
    seen: dict[str, dict[str, float]] = {stage: {} for stage in STAGES}
    with open(log, "rb") as f:
        f.seek(offset)
        for raw in f:
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            msg = rec.get("message", "")
            for stage, rx in STAGES.items():
                m = rx.match(msg)
                if m and m["ns"] == ns and m["name"] not in seen[stage]:
                    t = datetime.strptime(rec["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
                    seen[stage][m["name"]] = t
    out: dict[str, Any] = {}
    for stage, times in seen.items():
        deltas = [t - created_wall[k] for k, t in times.items() if k in created_wall]
        if deltas:
            out[stage] = {"count": len(deltas), "p50_s": round(statistics.median(deltas), 2),
                          "p90_s": round(pct(deltas, 90), 2)}
    return out


def make_unrelated(api: client.ApiClient, count: int) -> dict[str, Any]:
    """`count` Deployments (replicas 0, the same pod template) and `count` (headless) Services in one
    namespace, labelled as someone else's: what a shared cluster holds besides ours."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    ns = "unrelated"
    new_namespace(core, ns)
    labels = {"app.kubernetes.io/managed-by": "someone-else", "app.kubernetes.io/name": "other"}

    def create(i: int) -> None:
        dep = floor_object(build_deployment, ns, i)
        dep["metadata"].update(name=f"other-{i:05d}", labels=labels)
        dep["spec"]["replicas"] = 0
        apps.create_namespaced_deployment(ns, dep)
        core.create_namespaced_service(ns, {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": f"other-{i:05d}", "labels": labels},
            # Headless: 5,000 ClusterIP allocations take ~10 min on a loaded 2-core machine; to the
            # operator's watches (were they unfiltered) a headless Service is the same object.
            "spec": {"clusterIP": "None", "selector": {"app": f"other-{i:05d}"},
                     "ports": [{"port": 80, "targetPort": 3000}]}})

    t0 = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(create, range(count)))
    created = time.monotonic() - t0

    def settled() -> bool:
        # A shared cluster is not in the middle of creating 5,000 Deployments: wait until the
        # deployment controller has handled every one (its ReplicaSet made, status written), so
        # the case measures the operator among other objects, not behind the controller's backlog.
        items = apps.list_namespaced_deployment(ns, _preload_content=False)
        deps = json.loads(items.data)["items"]
        return sum(1 for d in deps if (d.get("status") or {}).get("observedGeneration", 0)
                   >= d["metadata"].get("generation", 1)) == count

    wait_until(settled, 900, what=f"the deployment controller to handle {count} Deployments", interval=5.0)
    return {"deployments": count, "services": count, "create_s": round(created, 1),
            "settled_s": round(time.monotonic() - t0 - created, 1)}


def main() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(state_dir=WORK / "cluster", node=False)
    op: OperatorProcess | None = None
    out: dict[str, Any] = {"benchmark": "operator burst"}

    def operator(name: str) -> OperatorProcess:
        # A fresh operator per case, so RSS, CPU and write counts belong to that case.
        return OperatorProcess(str(cluster.kubeconfig), WORK / f"operator-{name}.log", resync_seconds=RESYNC).start()

    try:
        cluster.up()
        cluster.install_crd(REPO / "crds", "modeldeployments.modeldeploy.io")
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        api.configuration.connection_pool_maxsize = 32
        floors, floors_svc = {}, {}
        for n in SIZES:
            floors[n] = run_floor(n, api, cluster)
            print(json.dumps({"floor": floors[n]}), flush=True)
            floors_svc[n] = run_floor(n, api, cluster, services=True)
            print(json.dumps({"floor_with_services": floors_svc[n]}), flush=True)
        out["floor"] = list(floors.values())
        out["floor_with_services"] = list(floors_svc.values())
        results = []
        for n in SIZES:
            op = operator(str(n))
            r = run_operator(n, api, cluster, op, str(n))
            if floors[n]["all_ready_s"] and r["all_ready_s"]:
                r["floor_all_ready_s"] = floors[n]["all_ready_s"]
                r["ratio_to_floor"] = round(r["all_ready_s"] / floors[n]["all_ready_s"], 2)
            if floors_svc[n]["all_ready_s"] and r["all_ready_s"]:
                r["floor_with_services_all_ready_s"] = floors_svc[n]["all_ready_s"]
                r["ratio_to_floor_with_services"] = round(r["all_ready_s"] / floors_svc[n]["all_ready_s"], 2)
            results.append(r)
            print(json.dumps(results[-1]), flush=True)
            op.stop()
            op = None
        out["results"] = results
        if UNRELATED:
            # Empty-cluster reference first (a fresh operator, the same 100), then the same with the
            # unrelated objects present before the operator starts (its initial lists include them).
            op = operator("empty")
            empty = run_operator(UNRELATED_N, api, cluster, op, "empty", idle=False)
            op.stop()
            op = None
            made = make_unrelated(api, UNRELATED)
            print(json.dumps({"unrelated": made}), flush=True)
            op = operator("unrelated")
            crowded = run_operator(UNRELATED_N, api, cluster, op, "unrelated", idle=False)
            op.stop()
            op = None
            out["unrelated"] = {
                "objects": made, "empty_cluster": empty, "with_unrelated": crowded,
                "peak_rss_ratio": round(crowded["operator_peak_rss_mib"] / empty["operator_peak_rss_mib"], 3),
                "rss_ratio": round(crowded["operator_rss_mib"] / empty["operator_rss_mib"], 3),
                "cpu_ratio": round(crowded["operator_cpu_total_s"] / max(empty["operator_cpu_total_s"], 0.01), 2),
            }
            print(json.dumps(out["unrelated"]), flush=True)
        rss = cluster.rss_mib()
    finally:
        if op is not None:
            op.stop()
        cluster.down(quiet=True)
    out.update({"control_plane_rss_mib_after": {k: round(v, 1) for k, v in rss.items()},
                "machine": {"cpus": os.cpu_count()}, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    dest = Path(os.environ.get("BENCH_OUT", REPO / "bench" / "results" / "operator.json"))
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written: {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
