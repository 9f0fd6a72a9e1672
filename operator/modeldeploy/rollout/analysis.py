"""Turn measured values into verdicts. Pure: the controller measures, this judges.

The rules users asked the other tools for:
- a provider error, an empty result or NaN is never a success;
- too little traffic (fewer than `minRequests` canary requests in the window) is *inconclusive*:
  the step is held, never promoted, never counted as a failure;
- one failing metric fails the analysis; every value, threshold and verdict is recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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


def analyse(spec: Analysis, requests: Measurement | None, measurements: list[Measurement], time: str
            ) -> AnalysisResult:
    """Combine: traffic gate first (inconclusive), then any Error, then any Fail, else Pass."""
    records: list[AnalysisRecord] = []
    if requests is not None:
        if requests.error is not None:
            rec = AnalysisRecord(metric="requests", verdict="Error", min=float(spec.min_requests), time=time,
                                 message=f"provider error: {requests.error}")
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
