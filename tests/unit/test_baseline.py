"""Baseline checks: the canary judged against the stable over the same window (rollout.analysis.compare)."""

from __future__ import annotations

import math

import numpy as np

from modeldeploy.api import Analysis, MetricCheck
from modeldeploy.rollout.analysis import Comparison, Measurement, Track, analyse, compare, probe

T = "2026-12-03T00:00:00Z"
INF = math.inf
SPEC = Analysis(minRequests=50, metrics=[MetricCheck(name="error-rate", maxIncrease=0.02)])
ERR = MetricCheck(name="error-rate", maxIncrease=0.02)
P99 = MetricCheck(name="latency-p99", maxRatio=1.5)
DRIFT = MetricCheck(name="prediction-drift")
INPUTS = MetricCheck(name="input-drift")
LATENCY_LE = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0]


def counts(n: float, e: float) -> Track:
    return Track(requests=n, errors=e)


def step(c: Comparison, spec: Analysis = SPEC) -> tuple[str, float | None, str]:
    r = compare(c, spec, T, spec.confidence, spec.pass_confidence)
    return r.verdict, r.confidence, r.message


def latencies(seconds: np.ndarray) -> list[tuple[float, float]]:
    return [(le, float((seconds <= le).sum())) for le in LATENCY_LE] + [(INF, float(len(seconds)))]


def predictions(values: np.ndarray, edges: list[float]) -> list[tuple[float, float]]:
    return [(e, float((values <= e).sum())) for e in edges] + [(INF, float(len(values)))]


def test_a_stable_wide_incident_is_not_the_canarys_fault() -> None:
    spec = Analysis(minRequests=50, passConfidence=0.8)
    incident = MetricCheck(name="error-rate", maxIncrease=0.05)
    verdict, conf, msg = step(Comparison(incident, canary=counts(400, 124), stable=counts(1600, 480)), spec)
    assert verdict == "Pass", msg
    assert conf is not None and conf >= 0.8
    assert "vs stable 0.3" in msg


def test_a_canary_failing_80_percent_fails_with_far_fewer_requests_than_min_requests() -> None:
    verdict, conf, msg = step(Comparison(ERR, canary=counts(8, 7), stable=counts(40, 0)))
    assert verdict == "Fail", msg
    assert conf is not None and conf >= 0.99
    assert "more than +0.02 above the stable's" in msg


def test_a_healthy_canary_below_min_requests_is_inconclusive_never_pass() -> None:
    verdict, _, msg = step(Comparison(ERR, canary=counts(20, 0), stable=counts(200, 1)))
    assert verdict == "Inconclusive"
    assert "fewer than minRequests (50)" in msg


def test_a_canary_slightly_worse_than_allowed_with_little_evidence_is_inconclusive() -> None:
    verdict, _, msg = step(Comparison(ERR, canary=counts(60, 3), stable=counts(600, 6)))
    assert verdict == "Inconclusive", msg
    assert "not proven either way" in msg


def test_no_stable_traffic_is_nothing_to_compare_with_and_a_provider_error_is_an_error() -> None:
    assert step(Comparison(ERR, canary=counts(100, 0), stable=counts(0, 0)))[0] == "Inconclusive"
    verdict, _, msg = step(Comparison(ERR, error="prometheus unreachable"))
    assert (verdict, msg) == ("Error", "error-rate-vs-stable: provider error: prometheus unreachable")


def test_latency_ratio_fails_a_slow_canary_and_passes_one_as_fast_as_stable() -> None:
    rng = np.random.default_rng(1)
    stable = latencies(rng.gamma(4, 0.01, size=2000))
    # A p99 needs traffic: within 1.5 x with 80 % confidence takes some hundreds of requests without a slow one.
    fast = Comparison(P99, canary=Track(buckets=latencies(rng.gamma(4, 0.01, size=1500))), stable=Track(buckets=stable))
    slow = Comparison(P99, canary=Track(buckets=latencies(rng.gamma(4, 0.01, size=100) + 0.3)),
                      stable=Track(buckets=stable))
    assert step(fast)[0] == "Pass"
    verdict, conf, msg = step(slow)
    assert verdict == "Fail" and conf is not None and conf >= 0.99, msg
    rec = compare(slow, SPEC, T, 0.99, 0.8)
    assert rec.metric == "latency-p99-vs-stable" and rec.value is not None and rec.value > 1.5 and rec.max == 1.5


def test_prediction_drift_fails_a_model_that_predicts_a_shifted_distribution() -> None:
    rng = np.random.default_rng(2)
    train = rng.normal(150, 40, size=5000)
    edges = sorted(float(x) for x in np.quantile(train, np.linspace(0, 1, 11)[1:-1]))
    stable = Track(buckets=predictions(rng.normal(150, 40, size=600), edges))
    healthy = Comparison(DRIFT, canary=Track(buckets=predictions(rng.normal(150, 40, size=150), edges)), stable=stable)
    shifted = Comparison(DRIFT, canary=Track(buckets=predictions(rng.normal(150, 40, size=150) * 1.6, edges)),
                         stable=stable)
    assert step(healthy)[0] == "Pass"
    rec = compare(shifted, SPEC, T, 0.99, 0.8)
    assert rec.verdict == "Fail" and rec.max == 0.2 and rec.value is not None and rec.value > 0.2
    assert "PSI" in rec.message and "above 0.2" in rec.message


def test_prediction_drift_is_not_blamed_on_the_model_when_the_tracks_inputs_differ() -> None:
    rng = np.random.default_rng(4)
    z = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]
    edges = [100.0, 130.0, 150.0, 170.0, 200.0]
    spec = Analysis(minRequests=50, metrics=[DRIFT, INPUTS])
    stable = Track(buckets=predictions(rng.normal(150, 30, 600), edges),
                   features={"area": predictions(rng.normal(0, 1, 600), z)})
    canary = Track(buckets=predictions(rng.normal(200, 30, 200), edges),
                   features={"area": predictions(rng.normal(1.5, 1, 200), z)})
    result = analyse(spec, Measurement(None, value=200), [], T,
                     comparisons=[Comparison(DRIFT, canary=canary, stable=stable),
                                  Comparison(INPUTS, canary=canary, stable=stable)])
    assert result.verdict == "Inconclusive", result.reason
    verdicts = {r.metric: r for r in result.records}
    assert verdicts["input-drift"].verdict == "Inconclusive"
    assert "the tracks' inputs differ" in verdicts["prediction-drift"].message
    assert "feature area" in verdicts["input-drift"].message


def test_below_min_requests_only_a_proven_failure_decides() -> None:
    few = Measurement(None, value=8)
    failing = [Comparison(ERR, canary=counts(8, 7), stable=counts(40, 0))]
    healthy = [Comparison(ERR, canary=counts(8, 0), stable=counts(40, 0))]
    result = analyse(SPEC, few, [], T, comparisons=failing)
    assert result.verdict == "Fail" and [r.metric for r in result.records] == ["requests", "error-rate-vs-stable"]
    assert analyse(SPEC, few, [], T, comparisons=healthy).verdict == "Inconclusive"


def test_an_in_step_measurement_fails_early_on_a_proven_baseline_failure_and_never_passes() -> None:
    failing = [Comparison(ERR, canary=counts(12, 10), stable=counts(60, 1))]
    result = probe(SPEC, Measurement(None, value=12), None, [], T, alpha=0.001, suspects=0, comparisons=failing)
    assert result.verdict == "Fail" and result.records[0].early
    healthy = [Comparison(ERR, canary=counts(300, 0), stable=counts(900, 0))]
    result = probe(SPEC, Measurement(None, value=300), None, [], T, alpha=0.001, suspects=0, comparisons=healthy)
    assert result.verdict == "Pass" and not result.records  # "nothing proven": a probe cannot pass a step
