"""The demo's story, shared by `make demo` (real node) and `make kind-demo` (kind).

Why one module: both targets must tell the same story on different clusters — v1 Ready under
Pod Security "restricted", load through the model's Service (the client never reads the
operator's status), a faulty v2 rolled back, a healthy v3 promoted step by step with the observed
canary share beside the reported weight, and v4 - 200 OK, fast, trained on wrongly scaled labels -
rolled back by the prediction-drift check against v3 — so the cluster-specific parts (how images got there,
where Prometheus is, how a namespace lands on the right node) come in as a `Story`'s fields.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from canarylab import ServiceLoad
from localcluster import wait_until

BOLD, DIM, RED, GREEN, RESET = "\033[1m", "\033[2m", "\033[31m", "\033[32m", "\033[0m"
NAME, NS = "room-price", "demo"


def say(text: str) -> None:
    print(f"\n{BOLD}==> {text}{RESET}", flush=True)


def model(version: str, fault_rate: str | None = None) -> dict[str, Any]:
    # `env` always: a merge patch without it would keep the previous version's (v2's fault for v3).
    env = [{"name": "MODELDEPLOY_FAULT_ERROR_RATE", "value": fault_rate}] if fault_rate else []
    return {"image": f"localhost/modeldeploy/room-price:{version}", "bento": f"room_price:{version}", "env": env,
            "resources": {"requests": {"cpu": "50m", "memory": "160Mi"}, "limits": {"memory": "1Gi"}}}


def report_share(load: ServiceLoad, version: str, weight: int, since: float, until: float) -> None:
    window = load.window(since + 1.0, until)  # 1 s for kube-proxy to program the new endpoints
    if len(window) < 20:
        return
    share = load.share(version, since + 1.0, until) or 0.0
    print(f"  {DIM}         reported weight {weight:>3}%  ->  observed share of the canary's answers "
          f"{share:5.1f}% ({len(window)} requests){RESET}", flush=True)


@dataclass
class Story:
    """Steps 4-7 of the demo on a cluster whose images and Prometheus are in place."""

    env: dict[str, str]                      # KUBECONFIG (and PATH) for kubectl and the CLI
    prometheus_url: str                      # as the operator's pod reaches it
    versions: dict[str, str]                 # "v1" -> the model version that image's /predict reports
    namespace_metadata: dict[str, Any] = field(default_factory=dict)
    first_step: int = 4
    timings: dict[str, float] = field(default_factory=dict)
    _load: ServiceLoad | None = field(default=None, init=False, repr=False)

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        out = subprocess.run(["kubectl", *args], capture_output=True, text=True, input=stdin, env=self.env)
        if check and out.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed: {out.stderr}")
        return out.stdout

    def show(self, *args: str) -> None:
        print(self.kubectl(*args), end="", flush=True)

    def get_md(self) -> dict[str, Any]:
        return json.loads(self.kubectl("get", "mdep", NAME, "-n", NS, "-o", "json"))

    def cli_status(self) -> None:
        subprocess.run([sys.executable, "-m", "modeldeploy.cli", "status", NAME, "-n", NS], check=False, env=self.env)

    def follow(self, until: Any, timeout: float, load: ServiceLoad, canary_version: str) -> dict[str, Any]:
        """A line per change of phase, step, weight or newest analysis; at each weight change, the share
        of answers the canary's version gave while the previous weight held. Stops when `until(status)`."""
        deadline = time.monotonic() + timeout
        t0 = last_change = time.monotonic()
        last: tuple[Any, ...] | None = None
        weight = 0
        while time.monotonic() < deadline:
            st = self.get_md().get("status", {})
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
                    verdict = a.get("verdict")
                    colour = RED if verdict in ("Fail", "Error") else GREEN if verdict == "Pass" else ""
                    ana = f"  last analysis: {a.get('metric')}={value} {colour}{a.get('verdict')}{RESET}"
                print(f"  {now - t0:5.1f}s  {st.get('phase', ''):<11} step {st.get('currentStep', 0)}  "
                      f"canary weight {new_weight:>3}%{ana}", flush=True)
            if until(st):
                if weight:
                    report_share(load, canary_version, weight, last_change, now)
                return st
            time.sleep(0.3)
        raise SystemExit("timed out following the rollout")

    def run(self) -> None:
        """Steps 4-7; the load generator is stopped however they end."""
        self._load = None
        try:
            self._steps()
        finally:
            if self._load is not None:
                self._load.stop()

    def _steps(self) -> None:
        kubectl, show, get_md, prom_url, versions = self.kubectl, self.show, self.get_md, self.prometheus_url, \
            self.versions
        n = self.first_step
        say(f"{n}. v1: a ModelDeployment in namespace {NS} (Pod Security 'restricted' enforced)")
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, **self.namespace_metadata}}
        kubectl("apply", "-f", "-", stdin=json.dumps(ns))
        wait_until(lambda: kubectl("get", "sa", "default", "-n", NS, check=False), 30, "default ServiceAccount")
        manifest = {
            "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {
                "model": model("v1"),
                "autoscaling": {"minReplicas": 2, "maxReplicas": 4},
                "rollout": {"strategy": "Canary", "canary": {"steps": [20, 50, 80], "interval": "10s"},
                            "analysis": {"prometheus": {"address": prom_url}, "minRequests": 10, "failureLimit": 1,
                                         "metrics": [{"name": "error-rate", "max": 0.05, "maxIncrease": 0.02},
                                                     {"name": "latency-p99", "max": 0.5},
                                                     {"name": "prediction-drift", "max": 0.2}]}},
            },
        }
        t0 = time.monotonic()
        print(kubectl("apply", "-f", "-", stdin=json.dumps(manifest)), end="")
        wait_until(lambda: get_md().get("status", {}).get("phase") == "Healthy", 240, "v1 Healthy")
        self.timings["v1 Healthy"] = time.monotonic() - t0
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

        load = self._load = ServiceLoad(url, rate_per_second=40, max_seconds=600).start()
        print(f"  load: 40 req/s to {url}/predict, a new connection each (kube-proxy picks the pod)")

        say(f"{n + 1}. v2 (30 % of its answers are 500s): canary, analysis sees the errors, rollback")
        t0 = time.monotonic()
        patch = json.dumps({"spec": {"model": model("v2", "0.3")}})
        kubectl("patch", "mdep", NAME, "-n", NS, "--type=merge", "-p", patch)
        st = self.follow(lambda s: s.get("phase") in ("RolledBack", "Failed"), 240, load, versions["v2"])
        self.timings["v2 rolled back"] = time.monotonic() - t0
        print(f"{RED}  rolled back {time.monotonic() - t0:.1f}s after v2 was applied:{RESET} {st.get('message')}")
        self.cli_status()

        say(f"{n + 2}. v3 (healthy): promoted step by step")
        t0 = time.monotonic()
        t_v3 = time.monotonic()
        kubectl("patch", "mdep", NAME, "-n", NS, "--type=merge", "-p", json.dumps({"spec": {"model": model("v3")}}))
        st = self.follow(lambda s: s.get("phase") in ("RolledBack", "Failed") or (
            s.get("phase") == "Healthy" and (s.get("stable") or {}).get("bento") == "room_price:v3"), 300, load,
            versions["v3"])
        if st.get("phase") != "Healthy":
            raise SystemExit(f"v3 was not promoted: {st.get('message')}")
        self.timings["v3 promoted"] = time.monotonic() - t0
        print(f"{GREEN}  promoted {time.monotonic() - t0:.1f}s after v3 was applied{RESET}")
        self.cli_status()
        wait_until(lambda: "v1" not in kubectl("get", "pods", "-n", NS, "-o", "jsonpath={..image}"), 120,
                   "old pods gone")
        show("get", "pods", "-n", NS, "-o", "wide")

        say(f"{n + 3}. v4 (200 OK and fast, trained on labels scaled 1.6x by a bug): rolled back by prediction drift")
        t0 = time.monotonic()
        kubectl("patch", "mdep", NAME, "-n", NS, "--type=merge", "-p", json.dumps({"spec": {"model": model("v4")}}))
        st = self.follow(lambda s: s.get("phase") in ("RolledBack", "Failed") or (
            s.get("phase") == "Healthy" and (s.get("stable") or {}).get("bento") == "room_price:v4"), 240, load,
            versions["v4"])
        if st.get("phase") != "RolledBack":
            raise SystemExit(f"v4 was not rolled back: {st.get('phase')}: {st.get('message')}")
        self.timings["v4 rolled back"] = time.monotonic() - t0
        drift = next((r for r in st.get("lastAnalysis") or [] if r.get("metric") == "prediction-drift"), {})
        value = drift.get("value")
        print(f"{RED}  rolled back {time.monotonic() - t0:.1f}s after v4 was applied: prediction drift (PSI) "
              f"{'-' if value is None else f'{value:.3g}'} > {drift.get('max')}, confidence "
              f"{drift.get('confidence')}{RESET}\n  {st.get('message')}")
        v4 = load.by_version().get(versions["v4"], {})
        print(f"  v4's own answers: {v4.get('ok', 0)} ok, {v4.get('failed', 0)} failed - "
              "no HTTP check could have caught it")
        self.cli_status()

        say(f"{n + 4}. what the operator recorded, and what the client saw")
        show("get", "events", "-n", NS, "--field-selector", "involvedObject.kind=ModelDeployment",
             "--sort-by=.lastTimestamp", "-o", "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message")
        names = {v: k for k, v in versions.items()}
        for version, row in sorted(load.by_version().items(), key=lambda kv: names.get(kv[0], kv[0])):
            print(f"  {names.get(version, 'no answer'):<10} answered {row['ok']:>5} ok, {row['failed']:>4} failed")
        failed_v3 = load.failures(since=t_v3)
        print(f"  failed requests from v3's apply to the end: {failed_v3 or 'none'}")
