"""Run the real operator (`modeldeploy operator`) as a subprocess: for tests, benchmarks and the demo."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from localcluster import free_port, wait_until


class OperatorMetrics:
    """Reading the operator's own Prometheus metrics, wherever it runs (`url` + /metrics)."""

    url: str

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            return r.read().decode()

    def writes(self, kinds: tuple[str, ...] | None = None) -> float:
        """Total API writes this operator process has sent (all verbs; of `kinds` only, if given —
        e.g. leave out "Lease" to count only what the controller wrote)."""
        total = 0.0
        for m in re.finditer(r'^modeldeploy_api_writes_total\{([^}]*)\} ([0-9.e+]+)$', self.metrics(), re.M):
            kind = re.search(r'kind="([^"]*)"', m.group(1))
            if kinds is None or (kind is not None and kind.group(1) in kinds):
                total += float(m.group(2))
        return total

    def counter(self, series: str) -> float:
        """Value of one exposed series (0 when absent), e.g. 'modeldeploy_reconciles_total{result="ok"}'."""
        for line in self.metrics().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return 0.0


class OperatorProcess(OperatorMetrics):
    def __init__(self, kubeconfig: str, log_path: Path, resync_seconds: float = 3.0,
                 extra_env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.extra_env = extra_env or {}
        self.args = args  # extra `modeldeploy operator` flags, e.g. ("--context", "NAME")
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.resync_seconds = resync_seconds
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OperatorProcess:
        self.port = free_port()
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, MODELDEPLOY_HTTP_ADDRESS=f"127.0.0.1:{self.port}",
                   MODELDEPLOY_RESYNC_SECONDS=str(self.resync_seconds), MODELDEPLOY_BACKOFF_MAX_SECONDS="5",
                   MODELDEPLOY_LOG_FORMAT="json")
        env.update(self.extra_env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen([sys.executable, "-m", "modeldeploy.cli", "operator", *self.args], env=env,
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_until(self._ready, 60, what=f"operator /readyz (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"operator exited {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """An unclean death: SIGKILL, so nothing of the operator's shutdown runs (its Lease is not
        released and has to expire)."""
        self.stop(signal.SIGKILL)

    def __enter__(self) -> OperatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the operator's process group and wait for it to exit (SIGKILL after 20 s)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None


class InClusterOperator(OperatorMetrics):
    """The operator as users run it: its image on the real node, installed by the Helm chart.

    Same surface as OperatorProcess (start/stop, metrics, counter, writes), plus `restart_pod`
    (the in-cluster form of "the operator was killed"). The host reaches the pod's metrics port
    directly on its pod IP (the pod bridge), so nothing is port-forwarded.
    """

    RELEASE = "modeldeploy"
    NAMESPACE = "modeldeploy-system"
    CHART = Path(__file__).resolve().parent.parent / "charts" / "modeldeploy"

    def __init__(self, kubeconfig: str, image: str, resync_seconds: float = 3.0,
                 extra_values: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.repository, self.tag = image.rsplit(":", 1)
        self.resync_seconds = resync_seconds
        self.extra_values = extra_values or {}
        self.env = dict(os.environ, KUBECONFIG=kubeconfig)
        self.pod_ip = ""
        self.pod_name = ""

    @property
    def url(self) -> str:
        return f"http://{self.pod_ip}:8080"

    def _run(self, *argv: str, check: bool = True) -> str:
        out = subprocess.run(list(argv), env=self.env, capture_output=True, text=True)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {out.stderr.strip()}")
        return out.stdout

    def start(self, timeout: float = 120.0) -> InClusterOperator:
        from localnode import real_pods_namespace_metadata

        ns = {"apiVersion": "v1", "kind": "Namespace",
              "metadata": {"name": self.NAMESPACE, **real_pods_namespace_metadata()}}
        subprocess.run(["kubectl", "apply", "-f", "-"], input=json.dumps(ns), env=self.env, check=True,
                       capture_output=True, text=True)
        values = {"image.repository": self.repository, "image.tag": self.tag, "image.pullPolicy": "Never",
                  "operator.resyncSeconds": str(int(self.resync_seconds)),
                  "operator.backoffMaxSeconds": "5", **self.extra_values}
        sets = [a for k, v in values.items() for a in ("--set", f"{k}={v}")]
        self._run("helm", "upgrade", "--install", self.RELEASE, str(self.CHART), "-n", self.NAMESPACE,
                  "--wait", f"--timeout={int(timeout)}s", *sets)
        self._find_pod(timeout)
        return self

    def _find_pod(self, timeout: float, not_named: str = "") -> None:
        def ready() -> bool:
            pods = json.loads(self._run("kubectl", "get", "pods", "-n", self.NAMESPACE, "-l",
                                        f"app.kubernetes.io/instance={self.RELEASE}", "-o", "json"))["items"]
            for p in pods:
                conds = {c["type"]: c["status"] for c in p.get("status", {}).get("conditions", [])}
                if p["metadata"]["name"] != not_named and conds.get("Ready") == "True" \
                        and not p["metadata"].get("deletionTimestamp"):
                    self.pod_name, self.pod_ip = p["metadata"]["name"], p["status"]["podIP"]
                    return True
            return False

        wait_until(ready, timeout, what="the operator pod Ready")

    def restart_pod(self, timeout: float = 120.0) -> None:
        """Delete the operator's pod (no grace) and wait for its replacement to be Ready."""
        old = self.pod_name
        self._run("kubectl", "delete", "pod", "-n", self.NAMESPACE, old, "--grace-period=0", "--force", "--wait=false")
        self._find_pod(timeout, not_named=old)

    def logs(self) -> str:
        return self._run("kubectl", "logs", "-n", self.NAMESPACE, "-l", f"app.kubernetes.io/instance={self.RELEASE}",
                         "--tail=-1", "--prefix", check=False)

    def stop(self) -> None:
        self._run("helm", "uninstall", self.RELEASE, "-n", self.NAMESPACE, "--wait", check=False)


