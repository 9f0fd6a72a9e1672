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

ROW = {"rows": [[62.0, 3.0, 1.0]]}


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
                    r = client.post(url + "/predict", json=ROW)
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
