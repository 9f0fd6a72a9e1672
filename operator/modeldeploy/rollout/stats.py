"""The statistics behind the baseline checks: intervals, histograms, drift. Pure, standard library only.

Why standard library only: the operator image carries no scipy, and every number here must be
reproducible from status by hand. The approximations are the textbook ones and are accurate to
about 0.01 in the confidences the checks report (tests/unit/test_stats.py compares them with scipy):

- Wilson's score interval for one proportion (`wilson`), and Newcombe's hybrid score interval for the
  difference of two independent proportions (`newcombe`, his method 10), both defined at 0 and n
  events, where the Wald interval collapses to a point;
- Prometheus histograms as cumulative bucket counts [(le, count), ...], read with the same linear
  interpolation inside a bucket as `histogram_quantile` (`count_below`, `quantile`); the tails get a
  width of their own: the first bucket starts one neighbouring bucket's width below its bound (or at
  `lower`, 0 for latencies) and the +Inf bucket ends one width above the last finite bound;
- the population stability index between two histograms (`psi`) on the union of their bucket bounds
  (each model version derives its prediction buckets from its own training data, so two versions'
  bounds differ), with 0.5 added to every bin so an empty bin does not make it infinite;
- its sampling distribution (`drift_confidence`): for two samples of sizes n1 and n2 from
  distributions whose PSI is D, n1 n2 / (n1 + n2) x PSI is approximately non-central chi-square with
  bins - 1 degrees of freedom and non-centrality n1 n2 / (n1 + n2) x D (the PSI is the symmetric
  Kullback-Leibler divergence, which to second order is the two-sample chi-square statistic divided
  by that effective size). Patnaik's two-moment approximation turns the non-central distribution into
  a scaled central one, and Wilson and Hilferty's cube-root approximation gives its CDF.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

Buckets = Sequence[tuple[float, float]]  # (upper bound `le`, cumulative count), ascending; the last is +Inf

_NORMAL = NormalDist()
SMOOTHING = 0.5  # added to every PSI bin (of each histogram) before normalising


def z_for(confidence: float) -> float:
    """The one-sided standard normal quantile for `confidence` (0.99 -> 2.326)."""
    return _NORMAL.inv_cdf(min(max(confidence, 1e-12), 1 - 1e-12))


def wilson(k: float, n: float, z: float) -> tuple[float, float]:
    """Wilson's score interval (lower, upper) for the proportion k/n, each bound one-sided at `z`."""
    if n <= 0:
        return 0.0, 1.0
    p = min(max(k / n, 0.0), 1.0)
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denom = 1 + z * z / n
    return max(0.0, (centre - spread) / denom), min(1.0, (centre + spread) / denom)


def newcombe(k1: float, n1: float, k2: float, n2: float, z: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval (lower, upper) for p1 - p2, each bound one-sided at `z`."""
    p1, p2 = (k1 / n1 if n1 > 0 else 0.0), (k2 / n2 if n2 > 0 else 0.0)
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def confidence_reached(bound: Callable[[float], float], beyond: Callable[[float], bool]) -> float:
    """The highest one-sided confidence at which `beyond(bound(z))` still holds (0.5 when it does not
    hold even at z = 0, the point estimate). `bound(z)` must move monotonically towards the
    point estimate as z shrinks, as confidence bounds do."""
    if not beyond(bound(0.0)):
        return 0.5
    lo, hi = 0.0, 8.0
    if beyond(bound(hi)):
        return _NORMAL.cdf(hi)
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if beyond(bound(mid)) else (lo, mid)
    return _NORMAL.cdf(lo)


# --- histograms --------------------------------------------------------------------------------


def normalise(buckets: Buckets) -> list[tuple[float, float]]:
    """Sorted by bound, counts made cumulative-monotone (a reset mid-window can break that), +Inf last."""
    out: list[tuple[float, float]] = []
    running = 0.0
    for le, count in sorted((float(le), max(0.0, float(c))) for le, c in buckets):
        running = max(running, count)
        out.append((le, running))
    if not out or not math.isinf(out[-1][0]):
        out.append((math.inf, out[-1][1] if out else 0.0))
    return out


def total(buckets: Buckets) -> float:
    return normalise(buckets)[-1][1] if buckets else 0.0


def _edges(b: list[tuple[float, float]], lower: float | None) -> list[tuple[float, float, float, float]]:
    """Each bucket as (from, to, cumulative count at from, at to), the tails given a finite width."""
    finite = [le for le, _ in b if not math.isinf(le)]
    if not finite:
        return []
    width = (finite[1] - finite[0]) if len(finite) > 1 else max(abs(finite[0]), 1.0)
    start = lower if lower is not None and lower <= finite[0] else finite[0] - width
    out = []
    prev_le, prev_c = start, 0.0
    for le, c in b:
        if math.isinf(le):
            last_w = (finite[-1] - finite[-2]) if len(finite) > 1 else width
            le = prev_le + last_w
        out.append((prev_le, le, prev_c, c))
        prev_le, prev_c = le, c
    return out


def count_below(buckets: Buckets, x: float, lower: float | None = None) -> float:
    """Observations at or below `x`, interpolated linearly inside its bucket."""
    b = normalise(buckets)
    edges = _edges(b, lower)
    if not edges:
        return 0.0
    if x <= edges[0][0]:
        return 0.0
    for start, end, c0, c1 in edges:
        if x <= end:
            return c0 + (c1 - c0) * ((x - start) / (end - start) if end > start else 1.0)
    return b[-1][1]


def quantile(q: float, buckets: Buckets, lower: float | None = 0.0) -> float | None:
    """The q-quantile as Prometheus' histogram_quantile computes it (None without observations); one in
    the +Inf bucket is the highest finite bound."""
    b = normalise(buckets)
    n = b[-1][1]
    if n <= 0:
        return None
    rank = q * n
    prev_le, prev_c = (0.0 if lower is None else lower), 0.0
    for i, (le, c) in enumerate(b):
        if c >= rank and c > prev_c:
            if math.isinf(le):
                return b[i - 1][0] if i > 0 else None
            if i == 0 and (lower is None or le <= lower):
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    finite = [le for le, _ in b if not math.isinf(le)]
    return finite[-1] if finite else None


# --- drift -------------------------------------------------------------------------------------


def binned(buckets: Buckets, grid: Sequence[float]) -> list[float]:
    """Counts of `buckets` in the bins (-inf, g0], (g0, g1], ..., (g_last, +inf)."""
    b = normalise(buckets)
    cum = [count_below(b, g) for g in grid] + [b[-1][1]]
    return [max(0.0, c - p) for c, p in zip(cum, [0.0, *cum[:-1]], strict=True)]


def psi(reference: Buckets, current: Buckets) -> tuple[float, int]:
    """(PSI, number of bins) of `current` against `reference` on the union of their finite bounds."""
    grid = sorted({le for le, _ in [*reference, *current] if not math.isinf(le)})
    ref, cur = binned(reference, grid), binned(current, grid)
    k = len(ref)
    n_ref, n_cur = sum(ref) + SMOOTHING * k, sum(cur) + SMOOTHING * k
    value = 0.0
    for r, c in zip(ref, cur, strict=True):
        p, q = (r + SMOOTHING) / n_ref, (c + SMOOTHING) / n_cur
        value += (q - p) * math.log(q / p)
    return value, k


def chi2_cdf(x: float, df: float) -> float:
    """P(X <= x) for a chi-square with `df` degrees of freedom (Wilson-Hilferty)."""
    if x <= 0 or df <= 0:
        return 0.0
    v = 2 / (9 * df)
    return _NORMAL.cdf(((x / df) ** (1 / 3) - (1 - v)) / math.sqrt(v))


def ncx2_cdf(x: float, df: float, nc: float) -> float:
    """P(X <= x) for a non-central chi-square (Patnaik's approximation on top of `chi2_cdf`)."""
    if nc <= 0:
        return chi2_cdf(x, df)
    c = (df + 2 * nc) / (df + nc)
    nu = (df + nc) ** 2 / (df + 2 * nc)
    return chi2_cdf(x / c, nu)


def effective_size(n1: float, n2: float) -> float:
    return n1 * n2 / (n1 + n2) if n1 > 0 and n2 > 0 else 0.0


def drift_confidence(value: float, bins: int, n1: float, n2: float, threshold: float) -> float:
    """The confidence that the true PSI exceeds `threshold`, given `value` measured on samples of n1 and
    n2 in `bins` bins: P(statistic <= observed) if the true PSI were exactly the threshold. Its
    complement is the confidence that the true PSI is within the threshold."""
    m = effective_size(n1, n2)
    if m <= 0 or bins < 2:
        return 0.5
    return ncx2_cdf(m * value, bins - 1, m * threshold)
