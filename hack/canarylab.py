"""Real data plane for canary tests, the demo and the benchmark: BentoML servers standing in for pods.

kwok pods run no containers, so each track's traffic is served by a real `bentoml serve`
process; a real Prometheus scrapes them with the labels the in-cluster relabelling attaches
(`namespace`, `modeldeploy_io_name`, `modeldeploy_io_track`); and a bounded load generator splits
requests between them in the weight the operator reports in `.status.canaryWeight`.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from localprom import ScrapeTarget

# What the load generators send: one row per request, cycling through flats drawn like the room-price
# training data (area 18..160 m^2, floor 0..24, renovation 0..2; seeded, so every run sends the same).
# Real traffic varies: one fixed row makes every prediction one point, and two healthy model versions
# that predict it 0.5 % apart land in different histogram buckets - "drift" between identical models.
_RNG = random.Random(20261203)
BODIES = [{"rows": [[round(_RNG.uniform(18.0, 160.0), 1), float(_RNG.randrange(25)), float(_RNG.randrange(3))]]}
          for _ in range(256)]


def targets(namespace: str, name: str, stable_url: str, canary_url: str) -> list[ScrapeTarget]:
    def target(track: str, url: str) -> ScrapeTarget:
        return ScrapeTarget(job=f"{name}-{track}", address=url.removeprefix("http://"),
                            labels={"namespace": namespace, "modeldeploy_io_name": name,
                                    "modeldeploy_io_track": track})

    return [target("stable", stable_url), target("canary", canary_url)]


@dataclass
class LoadGenerator:
    """Sends /predict requests, each to the canary with probability weight/100. Bounded in time and count."""

    stable_url: str
    canary_url: str
    weight: Callable[[], int]
    rate_per_second: float = 40.0
    max_seconds: float = 180.0
    max_requests: int = 20000
    sent: dict[str, int] = field(default_factory=lambda: {"stable": 0, "canary": 0})
    errors: dict[str, int] = field(default_factory=lambda: {"stable": 0, "canary": 0})
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _weight: int = 0

    def start(self, workers: int = 4) -> LoadGenerator:
        self._threads = [threading.Thread(target=self._weights, daemon=True)]
        self._threads += [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()
        return self

    def _weights(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # the API may blip; keep the last weight
                self._weight = self.weight()
            self._stop.wait(0.25)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        interval = len(self._threads[1:]) / self.rate_per_second if self._threads[1:] else 0.1
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                if sum(self.sent.values()) >= self.max_requests:
                    return
                track = "canary" if rng.random() * 100 < self._weight else "stable"
                url = self.canary_url if track == "canary" else self.stable_url
                try:
                    r = client.post(url + "/predict", json=BODIES[rng.randrange(len(BODIES))])
                    if r.status_code >= 500:
                        self.errors[track] += 1
                except httpx.HTTPError:
                    self.errors[track] += 1
                self.sent[track] += 1
                self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)


@dataclass
class ServiceLoad:
    """/predict requests to one URL (a model's Service), tallied by the version that answered.

    Unlike LoadGenerator it knows nothing of the operator: which pod answers is kube-proxy's choice
    among the Service's ready endpoints, and each response names its model version
    (`x-model-version`), so the observed split can be set beside the weight the operator reports.
    Every request opens a new connection (kube-proxy balances connections, not requests).
    Bounded in time and count; stops by itself.
    """

    url: str
    rate_per_second: float = 40.0
    max_seconds: float = 240.0
    max_requests: int = 20000
    # Sent with every request: e.g. the Host a Gateway's HTTPRoute matches (hostnames).
    headers: dict[str, str] = field(default_factory=dict)
    # (time.monotonic(), version or "-<error>" when nothing answered, HTTP status or 0 for a transport error)
    records: list[tuple[float, str, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, workers: int = 4) -> ServiceLoad:
        self._threads = [threading.Thread(target=self._run, args=(workers,), daemon=True) for _ in range(workers)]
        for t in self._threads:
            t.start()
        return self

    def _run(self, workers: int) -> None:
        interval = workers / self.rate_per_second
        deadline = time.monotonic() + self.max_seconds
        rng = random.Random(threading.get_ident())
        with httpx.Client(timeout=5.0, headers={**self.headers, "Connection": "close"}) as client:
            while not self._stop.is_set() and time.monotonic() < deadline and len(self.records) < self.max_requests:
                try:
                    r = client.post(self.url + "/predict", json=BODIES[rng.randrange(len(BODIES))])
                    rec = (time.monotonic(), r.headers.get("x-model-version", "-"), r.status_code)
                except httpx.HTTPError as e:  # no answer: "-" and what went wrong (ConnectError, ReadTimeout, ...)
                    rec = (time.monotonic(), f"-{type(e).__name__}", 0)
                self.records.append(rec)  # list.append is atomic under the GIL
                self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def window(self, since: float = 0.0, until: float = float("inf")) -> list[tuple[float, str, int]]:
        return [r for r in list(self.records) if since <= r[0] < until]

    def by_version(self, since: float = 0.0, until: float = float("inf")) -> dict[str, dict[str, int]]:
        """{version: {"ok": n, "failed": n}} for the requests answered in [since, until)."""
        out: dict[str, dict[str, int]] = {}
        for _, version, code in self.window(since, until):
            row = out.setdefault(version, {"ok": 0, "failed": 0})
            row["ok" if 0 < code < 500 else "failed"] += 1
        return out

    def share(self, version: str, since: float = 0.0, until: float = float("inf")) -> float | None:
        """Percent of the window's answers that came from `version` (None for an empty window)."""
        recs = self.window(since, until)
        return 100.0 * sum(1 for r in recs if r[1] == version) / len(recs) if recs else None

    def failures(self, since: float = 0.0, until: float = float("inf")) -> dict[str, int]:
        """Failed requests per version ("-ConnectError", "-ReadTimeout", ...: no answer at all)."""
        return {v: c["failed"] for v, c in self.by_version(since, until).items() if c["failed"]}


def new_namespace(core: Any, name: str, timeout: float = 30.0) -> str:
    """Create a namespace and wait for its default ServiceAccount (pods are rejected before it exists)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", name)
            return name
        except ApiException:
            time.sleep(0.2)
    raise TimeoutError(f"namespace {name}: no default ServiceAccount after {timeout}s")
