"""A real Prometheus server (Debian's `prometheus`) on loopback, with a generated config.

Why: canary analysis must be tested against real PromQL evaluation, real scrapes and real
staleness, not a mock. Tests, benchmarks and the demo start one with the scrape targets they
need (and the labels the in-cluster relabelling would attach), query it over its HTTP API, and
stop it. Standard library only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from localcluster import free_port, stop_process


@dataclass
class ScrapeTarget:
    """One scrape job: `address` is host:port; `labels` are attached to every scraped series."""

    job: str
    address: str
    labels: dict[str, str] = field(default_factory=dict)
    metrics_path: str = "/metrics"


def render_config(targets: list[ScrapeTarget], scrape_interval: str, rule_files: list[str] | None = None) -> str:
    """Prometheus YAML (JSON is valid YAML) with one static job per target."""
    cfg: dict = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": t.job,
                "metrics_path": t.metrics_path,
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "static_configs": [{"targets": [t.address], "labels": t.labels}],
            }
            for t in targets
        ],
    }
    if rule_files:
        cfg["rule_files"] = rule_files
    return json.dumps(cfg, indent=2)


class PrometheusServer:
    """Start with `start()`, stop with `stop()` (or use as a context manager)."""

    def __init__(self, targets: list[ScrapeTarget], scrape_interval: str = "1s",
                 workdir: Path | None = None, binary: str = "prometheus") -> None:
        self.targets = targets
        self.scrape_interval = scrape_interval
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="modeldeploy-prom-"))
        self.binary = shutil.which(binary) or binary
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        path = self.workdir / "prometheus.yml"
        path.write_text(render_config(self.targets, self.scrape_interval))
        return path

    def reload(self) -> None:
        """Rewrite the config from `targets` and hot-reload it (POST /-/reload)."""
        self.write_config()
        req = urllib.request.Request(self.url + "/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=5):
            pass

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        cfg = self.write_config()
        self.port = free_port()
        log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={cfg}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(self.workdir / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError("prometheus did not become ready")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc.pid)
            self.proc.wait(timeout=5)
            self.proc = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP API ----------------------------------------------------------------------------
    def api(self, path: str, **params: str) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())

    def query(self, promql: str) -> list[dict]:
        """Instant query; returns the `result` list (vector samples)."""
        return self.api("/api/v1/query", query=promql)["data"]["result"]

    def scalar(self, promql: str) -> float | None:
        res = self.query(promql)
        return float(res[0]["value"][1]) if res else None

    def targets_up(self) -> bool:
        active = self.api("/api/v1/targets")["data"]["activeTargets"]
        return len(active) == len(self.targets) and all(t["health"] == "up" for t in active)
