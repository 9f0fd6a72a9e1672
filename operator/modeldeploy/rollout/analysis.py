"""Turn measured values into verdicts. Pure: the controller measures, this judges.

The rules users asked the other tools for:
- a provider error, an empty result or NaN is never a success;
- too little traffic (fewer than `minRequests` canary requests in the window) is *inconclusive*:
  the step is held, never promoted, never counted as a failure;
- one failing metric fails the analysis; every value, threshold and verdict is recorded.

Fail fast, pass slow: besides the analysis at the end of each step (`analyse`, the only way a
step passes), the canary is measured several times within the step (`probe`). A probe can only
fail a step early, and only when the failure is already certain:
- error-rate: the canary's own request counts since the step's window began. With n requests of
  which e failed, the one-sided Wilson score lower bound of the true error rate at confidence
  1 - alpha must exceed the threshold. alpha is the analysis' `1 - confidence` spread evenly over
  the step's measurements (Bonferroni), so a canary whose true error rate sits at the threshold is
  failed early with probability at most 1 - confidence per step. Assumes requests fail
  independently with a common probability (a binomial model).
- every other check (latency, custom PromQL): its value over the window since the step began
  violates the threshold with at least `minRequests` canary requests in it, in two measurements
  in a row (no count, so no bound: one sample must not decide).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

from modeldeploy.api import Analysis, AnalysisRecord, MetricCheck

Verdict = Literal["Pass", "Fail", "Inconclusive", "Error"]


@dataclass
class Measurement:
    """One metric's outcome from the provider: a value, or the error text."""

    check: MetricCheck | None  # None for the request-count gate
    value: float | None = None
    error: str | None = None


@dataclass
class AnalysisResult:
    verdict: Verdict
    records: list[AnalysisRecord] = field(default_factory=list)
    reason: str = ""
    kind: Literal["step", "probe"] = "step"  # end of step, or an in-step measurement (fail fast)
    revision: str | None = None               # the canary revision measured (None: the current one)
    suspect: bool = False                     # probe: a value-judged check failed (once is not enough)


def counted(check: MetricCheck) -> bool:
    """The built-in error-rate: an in-step measurement judges it from request counts, not its value."""
    return check.name == "error-rate" and check.query is None


def wilson_lower(errors: float, n: float, alpha: float) -> float:
    """One-sided lower confidence bound (level 1 - alpha) of a binomial proportion: Wilson's score interval."""
    if n <= 0:
        return 0.0
    z = NormalDist().inv_cdf(1 - alpha)
    p = min(max(errors / n, 0.0), 1.0)
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def _fmt(x: float | None) -> str:
    return "none" if x is None else f"{x:.6g}"


def judge(m: Measurement, time: str) -> AnalysisRecord:
    c = m.check
    assert c is not None
    bounds = " and ".join(p for p in (f">= {_fmt(c.min)}" if c.min is not None else "",
                                      f"<= {_fmt(c.max)}" if c.max is not None else "") if p)
    verdict: Verdict
    if m.error is not None:
        verdict, msg = "Error", f"provider error: {m.error}"
    elif m.value is None:
        verdict, msg = "Error", "query returned no data"
    elif math.isnan(m.value):
        verdict, msg = "Error", "query returned NaN"
    elif (c.min is not None and m.value < c.min) or (c.max is not None and m.value > c.max):
        verdict, msg = "Fail", f"{c.name} = {_fmt(m.value)}, want {bounds}"
    else:
        verdict, msg = "Pass", f"{c.name} = {_fmt(m.value)} within {bounds}"
    return AnalysisRecord(metric=c.name, value=None if m.value is None or math.isnan(m.value) else m.value,
                          min=c.min, max=c.max, verdict=verdict, message=msg, time=time)


NO_SERIES = ("Prometheus has no series for the canary's pods at all (not even `up`): the pod labels "
             "modeldeploy.io/name, /track and /revision are not relabelled onto the series, or no scrape config or "
             "PodMonitor selects the pods (see manifests/monitoring)")


def analyse(spec: Analysis, requests: Measurement | None, measurements: list[Measurement], time: str,
            targets: Measurement | None = None) -> AnalysisResult:
    """Combine: traffic gate first (inconclusive), then any Error, then any Fail, else Pass.

    `targets` counts the scrape targets of the canary's pods (`up`); it is measured when the request
    count has no series at all, to tell "no traffic yet" (targets present) from a monitoring
    configuration that cannot see the canary (none): the latter is an Error, never "no traffic".
    """
    records: list[AnalysisRecord] = []
    if requests is not None:
        if requests.error is not None:
            rec = AnalysisRecord(metric="requests", verdict="Error", min=float(spec.min_requests), time=time,
                                 message=f"provider error: {requests.error}")
            return AnalysisResult("Error", [rec], rec.message)
        if requests.value is None and targets is not None and targets.error is None and not targets.value:
            rec = AnalysisRecord(metric="requests", verdict="Error", min=float(spec.min_requests), time=time,
                                 message=NO_SERIES)
            return AnalysisResult("Error", [rec], rec.message)
        n = 0.0 if requests.value is None or math.isnan(requests.value) else requests.value
        if n < spec.min_requests:
            rec = AnalysisRecord(metric="requests", value=n, min=float(spec.min_requests), verdict="Inconclusive",
                                 time=time, message=f"{n:.0f} canary requests in the window, need "
                                                    f"{spec.min_requests}: holding the step")
            return AnalysisResult("Inconclusive", [rec], rec.message)
        records.append(AnalysisRecord(metric="requests", value=n, min=float(spec.min_requests), verdict="Pass",
                                      time=time, message=f"{n:.0f} canary requests in the window"))
    judged = [judge(m, time) for m in measurements]
    records += judged
    errors = [r for r in judged if r.verdict == "Error"]
    fails = [r for r in judged if r.verdict == "Fail"]
    if fails:
        return AnalysisResult("Fail", records, "; ".join(r.message for r in fails))
    if errors:
        return AnalysisResult("Error", records, "; ".join(f"{r.metric}: {r.message}" for r in errors))
    return AnalysisResult("Pass", records, "all checks passed")


def probe(spec: Analysis, requests: Measurement, errors: Measurement | None, measurements: list[Measurement],
          time: str, alpha: float, suspects: int) -> AnalysisResult:
    """An in-step measurement: Fail only when failure is certain, else Pass ("nothing proven").

    `requests`/`errors` are the canary's request and 5xx counts since the step's window began;
    `measurements` are the value-judged checks over the same window; `suspects` how many probes
    in a row before this one had a value-judged check failing. Provider errors and missing data
    decide nothing here: the step's own analysis counts them.
    """
    n = requests.value
    if requests.error is not None or n is None or math.isnan(n):
        return AnalysisResult("Pass", [], "no data yet", kind="probe")
    records: list[AnalysisRecord] = []
    suspect = False
    for m in measurements:
        c = m.check
        assert c is not None
        if counted(c) and c.max is not None:
            e = None if errors is None else errors.value
            if errors is None or errors.error is not None or e is None or math.isnan(e):
                continue
            e = min(max(e, 0.0), n)
            lower = wilson_lower(e, n, alpha)
            if lower > c.max:
                records.append(AnalysisRecord(
                    metric=c.name, value=e / n if n else None, max=c.max, verdict="Fail", time=time,
                    confidence=round(1 - alpha, 6), early=True,
                    message=f"error-rate = {_fmt(e / n)} ({e:.0f} of {n:.0f} canary requests failed): above "
                            f"{_fmt(c.max)} with {100 * (1 - alpha):.4g} % confidence (lower bound {_fmt(lower)})"))
            continue
        if n < spec.min_requests:
            continue
        rec = judge(m, time)
        if rec.verdict == "Fail":
            suspect = True
            if suspects >= 1:
                rec.early = True
                rec.message += f" in {suspects + 1} measurements in a row ({n:.0f} canary requests)"
                records.append(rec)
    if records:
        return AnalysisResult("Fail", records, "; ".join(r.message for r in records), kind="probe")
    return AnalysisResult("Pass", [], "no failure proven yet", kind="probe", suspect=suspect)
