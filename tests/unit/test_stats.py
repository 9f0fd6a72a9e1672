"""The statistics of the baseline checks against scipy and against published values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from modeldeploy.rollout import stats

INF = math.inf


def hist(sample: np.ndarray, edges: list[float]) -> list[tuple[float, float]]:
    return [(e, float((sample <= e).sum())) for e in edges] + [(INF, float(len(sample)))]


@pytest.mark.parametrize(("df", "nc"), [(3, 0), (10, 0), (10, 12.8), (5, 50), (20, 2), (9, 200)])
def test_noncentral_chi_square_cdf_is_within_two_points_of_scipy(df: int, nc: float) -> None:
    dist = sp.ncx2(df, nc) if nc else sp.chi2(df)
    for q in (0.01, 0.1, 0.5, 0.9, 0.99):
        x = float(dist.ppf(q))
        assert stats.ncx2_cdf(x, df, nc) == pytest.approx(q, abs=0.02)


def test_wilson_matches_the_published_interval_and_is_defined_at_zero_events() -> None:
    # Newcombe (1998), table I: 81/263, 95 % two-sided = 0.2553 to 0.3662.
    lo, hi = stats.wilson(81, 263, stats.z_for(0.975))
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    lo, hi = stats.wilson(0, 10, stats.z_for(0.975))
    assert lo == pytest.approx(0, abs=1e-12) and hi == pytest.approx(0.2775, abs=1e-4)


def test_newcombe_difference_matches_the_published_interval() -> None:
    # Newcombe (1998), table II: 56/70 - 48/80, 95 % two-sided (method 10) = 0.0524 to 0.3339.
    lo, hi = stats.newcombe(56, 70, 48, 80, stats.z_for(0.975))
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


def test_confidence_reached_is_the_level_where_the_bound_meets_the_threshold() -> None:
    conf = stats.confidence_reached(lambda z: stats.wilson(30, 100, z)[0], lambda lo: lo > 0.2)
    assert stats.wilson(30, 100, stats.z_for(conf))[0] == pytest.approx(0.2, abs=1e-3)
    assert stats.confidence_reached(lambda z: stats.wilson(10, 100, z)[0], lambda lo: lo > 0.2) == 0.5


def test_quantile_interpolates_inside_the_bucket_like_histogram_quantile() -> None:
    b = [(0.1, 50.0), (0.25, 99.0), (0.5, 100.0), (INF, 100.0)]
    assert stats.quantile(0.5, b) == pytest.approx(0.1)
    assert stats.quantile(0.25, b) == pytest.approx(0.05)     # from 0 to 0.1
    assert stats.quantile(0.99, b) == pytest.approx(0.25)
    assert stats.quantile(0.999, [(0.1, 5.0), (INF, 10.0)]) == 0.1  # in +Inf: the highest finite bound
    assert stats.quantile(0.5, [(0.1, 0.0), (INF, 0.0)]) is None


def test_count_below_and_normalise_survive_unsorted_and_non_monotone_buckets() -> None:
    b = [(INF, 100.0), (0.5, 80.0), (0.1, 90.0)]  # a counter reset made 0.1 > 0.5
    assert stats.normalise(b) == [(0.1, 90.0), (0.5, 90.0), (INF, 100.0)]
    assert stats.count_below(b, 0.05, lower=0.0) == pytest.approx(45.0)
    assert stats.count_below(b, 10.0) == 100.0


def test_psi_is_near_zero_for_one_distribution_under_two_bucket_layouts_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=20_000), rng.normal(size=20_000)
    ea = list(np.quantile(a, np.linspace(0, 1, 11)[1:-1]))
    eb = list(np.quantile(b, np.linspace(0, 1, 11)[1:-1]) + 0.03)
    same, bins = stats.psi(hist(a, ea), hist(b, eb))
    assert same < 0.01 and bins >= 11
    shifted, _ = stats.psi(hist(a, ea), hist(b * 1.5 + 1, ea))
    assert shifted > 0.5


def test_drift_test_passes_a_healthy_canary_and_fails_a_shifted_one_at_small_samples() -> None:
    rng = np.random.default_rng(3)
    edges = list(np.quantile(rng.normal(size=5000), np.linspace(0, 1, 11)[1:-1]))
    healthy_pass = shifted_fail = false_fail = 0
    runs = 200
    for _ in range(runs):
        stable = rng.normal(size=320)
        v, k = stats.psi(hist(stable, edges), hist(rng.normal(size=80), edges))
        c = stats.drift_confidence(v, k, 320, 80, 0.2)
        healthy_pass += (1 - c) >= 0.8
        false_fail += c >= 0.99
        v, k = stats.psi(hist(stable, edges), hist(rng.normal(loc=1.5, size=80), edges))
        shifted_fail += stats.drift_confidence(v, k, 320, 80, 0.2) >= 0.99
    assert false_fail == 0
    assert healthy_pass / runs > 0.8
    assert shifted_fail == runs
