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


def kubernetes_scrape_configs(path: Path, api_server: str, pki: Path, scrape_interval: str) -> list[dict]:
    """The shipped scrape configuration (`path`, e.g. manifests/monitoring/prometheus-scrape-config.yaml)
    pointed at our API server from outside the cluster, with the interval the caller needs.

    Only what differs out of cluster is added (where the API server is, how to authenticate);
    the discovery role and every relabelling rule stay exactly as users get them.
    """
    import yaml

    jobs: list[dict] = yaml.safe_load(path.read_text())["scrape_configs"]
    for job in jobs:
        job["scrape_interval"] = job["scrape_timeout"] = scrape_interval
        for sd in job.get("kubernetes_sd_configs", []):
            sd["api_server"] = api_server
            sd["tls_config"] = {"ca_file": str(pki / "ca.crt"), "cert_file": str(pki / "admin.crt"),
                                "key_file": str(pki / "admin.key")}
    return jobs


def render_config(targets: list[ScrapeTarget], scrape_interval: str, rule_files: list[str] | None = None,
                  extra_jobs: list[dict] | None = None) -> str:
    """Prometheus YAML (JSON is valid YAML) with one static job per target, plus `extra_jobs` as given."""
    cfg: dict = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": (extra_jobs or []) + [
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
                 workdir: Path | None = None, binary: str = "prometheus", host: str = "127.0.0.1",
                 extra_jobs: list[dict] | None = None) -> None:
        self.targets = targets
        self.host = host  # the pod bridge's address when pods (the operator) must query it
        self.extra_jobs = extra_jobs or []
        self.scrape_interval = scrape_interval
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="modeldeploy-prom-"))
        self.binary = shutil.which(binary) or binary
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def write_config(self) -> Path:
        path = self.workdir / "prometheus.yml"
        path.write_text(render_config(self.targets, self.scrape_interval, extra_jobs=self.extra_jobs))
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
             f"--web.listen-address={self.host}:{self.port}", "--web.enable-lifecycle",
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

    def targets_up(self, at_least: int | None = None) -> bool:
        """Every active target scraped successfully, and as many as the static ones (or `at_least`)."""
        active = self.api("/api/v1/targets")["data"]["activeTargets"]
        want = len(self.targets) if at_least is None else at_least
        return len(active) >= want and all(t["health"] == "up" for t in active)

    def discovered(self, **labels: str) -> list[dict]:
        """Active targets whose labels include `labels` (e.g. modeldeploy_io_track="canary")."""
        active = self.api("/api/v1/targets")["data"]["activeTargets"]
        return [t for t in active if all(t["labels"].get(k) == v for k, v in labels.items())]


SCRAPE_CONFIG = Path(__file__).resolve().parent.parent / "manifests" / "monitoring" / "prometheus-scrape-config.yaml"


def cluster_prometheus(server: str, pki: Path, bins: Path, workdir: Path, listen_host: str,
                       scrape_interval: str = "1s") -> PrometheusServer:
    """Prometheus discovering a cluster's pods as users' Prometheus does: the shipped scrape config
    (kubernetes_sd_configs, role pod, the track relabelling), on `listen_host` (the pod bridge, so
    the operator's pod can query it). Debian's build lacks Kubernetes SD: this is the one
    hack/build-binaries.sh builds. Not started yet."""
    return PrometheusServer([], scrape_interval=scrape_interval, workdir=workdir, binary=str(bins / "prometheus"),
                            host=listen_host,
                            extra_jobs=kubernetes_scrape_configs(SCRAPE_CONFIG, server, pki, scrape_interval))
