"""The baseline checks' PromQL against a real Prometheus scraping two real model servers.

A stable (v1) and a canary trained on labels scaled 1.6x (the demo's v4), the canary also failing
half of its requests, both scraped with the pod labels the relabelling puts on real pods. The
operator's own provider and query code (`controller.analysis.compare_tracks`) must read both
tracks' counts and histograms and the pure judges must see the drift and the errors, while the
inputs, the same for both, show no drift.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from localprom import ScrapeTarget
from modeldeploy.api import Analysis, MetricCheck
from modeldeploy.controller.analysis import compare_tracks
from modeldeploy.metrics.prometheus import PrometheusProvider
from modeldeploy.rollout.analysis import compare
from modeldeploy_model.testing import ServedModel, build_test_artifact, serve_subprocess
from tests.conftest import wait_for

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

LABELS = {"namespace": "ml", "modeldeploy_io_name": "price"}
REVISIONS = {"stable": "aaaaaaaaaa", "canary": "bbbbbbbbbb"}
ROWS = 150


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServedModel]]:
    root = tmp_path_factory.mktemp("baseline")
    stable_art = build_test_artifact(root / "v1", version_seed=1)
    canary_art = build_test_artifact(root / "v4", version_seed=4, label_scale=1.6)
    started: dict[str, ServedModel] = {}
    try:
        # Each server its own BENTOML_HOME, as each pod has: two servers sharing one also share BentoML's
        # prometheus_multiproc_dir, and one's /metrics then shows the other's histograms.
        started["stable"] = serve_subprocess(stable_art, env={"BENTOML_HOME": str(root / "home-stable")},
                                             log_path=Path(root / "stable.log"))
        started["canary"] = serve_subprocess(canary_art, env={"MODELDEPLOY_FAULT_ERROR_RATE": "0.5",
                                                              "BENTOML_HOME": str(root / "home-canary")},
                                             log_path=Path(root / "canary.log"))
        yield started
    finally:
        for s in started.values():
            s.stop()


def test_baseline_queries_read_both_tracks_and_the_judges_see_drift_and_errors(
        servers: dict[str, ServedModel], prometheus) -> None:  # type: ignore[no-untyped-def]
    targets = [ScrapeTarget(track, s.url.removeprefix("http://"), labels={
        **LABELS, "modeldeploy_io_track": track, "modeldeploy_io_revision": REVISIONS[track]})
        for track, s in servers.items()]
    prom = prometheus(targets)
    wait_for(prom.targets_up, 60, what="both model servers scraped")
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.uniform(18, 160, ROWS), rng.integers(0, 25, ROWS), rng.integers(0, 3, ROWS)])
    codes: dict[str, list[int]] = {"stable": [], "canary": []}
    with httpx.Client(timeout=10) as http:
        for row in rows.tolist():
            for track, s in servers.items():
                codes[track].append(http.post(f"{s.url}/predict", json={"rows": [row]}).status_code)
    assert set(codes["stable"]) == {200} and codes["canary"].count(500) > ROWS // 4

    provider = PrometheusProvider(prom.url)
    ok = codes["canary"].count(200)
    want = {"bentoml_service_request_total": {"stable": ROWS, "canary": ROWS},
            "modeldeploy_prediction_count": {"stable": ROWS, "canary": ok}}

    def scraped() -> bool:
        """Every request and every prediction of both tracks (a track not scraped yet has no series at all; the
        request counter can be a scrape ahead of the prediction histogram, which batching fills later)."""
        for metric, per_track in want.items():
            seen = {labels.get("modeldeploy_io_track"): v for labels, v in provider.query_vector(
                f'sum by (modeldeploy_io_track) ({metric}{{endpoint=~"/predict|"}})')}
            if any(seen.get(track, 0) < n for track, n in per_track.items()):
                return False
        return True

    wait_for(scraped, 30, what="Prometheus scraped every request and prediction of both tracks")
    spec = Analysis(minRequests=50)

    def judge(check: MetricCheck):  # type: ignore[no-untyped-def]
        c = compare_tracks(provider, check, "ml", "price", REVISIONS["canary"], REVISIONS["stable"], "5m")
        assert c.error is None, c.error
        return c, compare(c, spec, "2026-12-03T00:00:00Z", 0.99, 0.8)

    c, drift = judge(MetricCheck(name="prediction-drift"))
    assert c.canary is not None and c.stable is not None
    assert sum(1 for le, _ in c.canary.buckets if le == float("inf")) == 1
    assert max(n for _, n in c.canary.buckets) == ok and max(n for _, n in c.stable.buckets) == ROWS
    assert drift.verdict == "Fail" and drift.value is not None and drift.value > 0.2, drift.message

    c, errors = judge(MetricCheck(name="error-rate", maxIncrease=0.05))
    assert c.canary is not None and c.canary.requests == ROWS and c.canary.errors == ROWS - ok
    assert errors.verdict == "Fail" and errors.baseline == 0.0, errors.message

    c, inputs = judge(MetricCheck(name="input-drift"))
    assert c.canary is not None and set(c.canary.features) == {"area", "floor", "renovation"}
    assert inputs.verdict != "Fail", inputs.message  # the same rows went to both

    _, latency = judge(MetricCheck(name="latency-p90", maxRatio=3))
    assert latency.verdict != "Error" and latency.baseline is not None and latency.baseline > 0, latency.message
