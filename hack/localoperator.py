"""Run the real operator (`modeldeploy operator`) as a subprocess: for tests, benchmarks and the demo."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from localcluster import free_port, wait_until


class OperatorProcess:
    def __init__(self, kubeconfig: str, log_path: Path, resync_seconds: float = 3.0,
                 extra_env: dict[str, str] | None = None) -> None:
        self.extra_env = extra_env or {}
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
        self.proc = subprocess.Popen([sys.executable, "-m", "modeldeploy.cli", "operator"], env=env, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
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

    def stop(self, sig: int = signal.SIGTERM) -> None:
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

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            return r.read().decode()

    def writes(self) -> float:
        """Total API writes this operator process has sent (all kinds, all verbs)."""
        total = 0.0
        for m in re.finditer(r"^modeldeploy_api_writes_total\{[^}]*\} ([0-9.e+]+)$", self.metrics(), re.M):
            total += float(m.group(1))
        return total

    def counter(self, series: str) -> float:
        """Value of one exposed series (0 when absent), e.g. 'modeldeploy_reconciles_total{result="ok"}'."""
        for line in self.metrics().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return 0.0
