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

Baseline checks (`compare`) judge the canary against the stable measured over the same window
(Kayenta's idea), each with a test whose confidence is recorded (statistics in `stats`):
- error-rate-vs-stable (error-rate with maxIncrease): Newcombe's interval for the difference of
  the two error rates. Fail when its lower bound at the failure confidence exceeds maxIncrease;
  Pass when its upper bound at `passConfidence` is within maxIncrease. A stable-wide incident (a
  dependency failing for both tracks) raises both rates alike: no Fail.
- latency-pNN-vs-stable (latency-pNN with maxRatio): with t = maxRatio x the stable's pNN, a
  canary whose pNN is within t answers at most a fraction 1 - NN/100 of its requests slower than t.
  The canary's count above t (from its histogram) is tested against that fraction with Wilson's
  interval. The stable's quantile is taken as known (it usually serves far more requests).
- prediction-drift / input-drift: the population stability index between the two tracks'
  histograms (predictions; each input feature, the worst one counts), tested against
  `max` (default 0.2) through its non-central chi-square sampling distribution.
A clearly failing canary fails with fewer than `minRequests` requests (the test says so with the
stated confidence); a Pass needs `minRequests` on both tracks and the pass confidence; anything
in between is Inconclusive, never Pass. Assumed: requests (and predictions) are independent draws,
the router splits one traffic stream at random, so both tracks see the same inputs - which
input-drift checks: when the tracks' inputs differ, a prediction drift is not the model's fault,
and both records are Inconclusive instead of Fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

from modeldeploy.api import Analysis, AnalysisRecord, MetricCheck
from modeldeploy.rollout import stats

Verdict = Literal["Pass", "Fail", "Inconclusive", "Error"]
INPUTS_DIFFER = "the tracks' inputs differ"


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


@dataclass
class Track:
    """One track's data over the window, for a baseline check (what the check needs of it)."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: list[tuple[float, float]] = field(default_factory=list)              # latency or predictions
    features: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # input-drift


@dataclass
class Comparison:
    """A baseline check's inputs from the provider: both tracks over the same window, or the error."""

    check: MetricCheck
    canary: Track | None = None
    stable: Track | None = None
    error: str | None = None

    @property
    def metric(self) -> str:
        return self.check.comparison or self.check.name


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


def _pct(c: float) -> str:
    return "> 99.99 %" if c > 0.9999 else f"{100 * c:.4g} %"


def _decide(fail_conf: float, pass_conf: float, enough: bool, fail_level: float,
            pass_level: float | None) -> tuple[Verdict, float]:
    if fail_conf >= fail_level:
        return "Fail", fail_conf
    if pass_level is not None and enough and pass_conf >= pass_level:
        return "Pass", pass_conf
    return "Inconclusive", max(fail_conf, pass_conf)


def _why_inconclusive(enough: bool, n: float, spec: Analysis, fail_conf: float, pass_conf: float,
                      fail_level: float, pass_level: float | None, unit: str = "requests") -> str:
    if not enough:
        return f"holding: fewer than minRequests ({spec.min_requests}) {unit} on a track (canary {n:.0f})"
    want = f", need {_pct(pass_level)}" if pass_level is not None else ""
    return (f"not proven either way: within with {_pct(pass_conf)} confidence{want}, beyond with "
            f"{_pct(fail_conf)}, need {_pct(fail_level)}")


def _bounded(rec: AnalysisRecord, bounds: Callable[[float], tuple[float, float]], limit: float, enough: bool,
             n: float, spec: Analysis, fail_level: float, pass_level: float | None, seen: str, beyond: str,
             within: str) -> None:
    """Verdict, confidence and message of a check whose statistic has confidence bounds (lower, upper) at z:
    beyond `limit` when the lower bound is above it, within when the upper bound is at or below it."""
    fail_conf = stats.confidence_reached(lambda z: bounds(z)[0], lambda lo: lo > limit)
    pass_conf = stats.confidence_reached(lambda z: bounds(z)[1], lambda hi: hi <= limit)
    rec.verdict, conf = _decide(fail_conf, pass_conf, enough, fail_level, pass_level)
    rec.confidence = round(conf, 6)
    if rec.verdict == "Fail":
        rec.message = f"{seen}: {beyond} with {_pct(conf)} confidence"
    elif rec.verdict == "Pass":
        rec.message = f"{seen}: {within} with {_pct(conf)} confidence"
    else:
        rec.message = f"{seen}: " + _why_inconclusive(enough, n, spec, fail_conf, pass_conf, fail_level, pass_level)


def _error_rate(c: Comparison, canary: Track, stable: Track, spec: Analysis, time: str, fail_level: float,
                pass_level: float | None) -> AnalysisRecord:
    limit = c.check.max_increase or 0.0
    nc, ns = max(canary.requests, 0.0), max(stable.requests, 0.0)
    ec, es = min(max(canary.errors, 0.0), nc), min(max(stable.errors, 0.0), ns)
    rec = AnalysisRecord(metric=c.metric, max=limit, verdict="Inconclusive", time=time)
    if nc <= 0 or ns <= 0:
        rec.message = ("no canary requests in the window" if nc <= 0 else
                       "the stable served no requests in the window: nothing to compare with")
        return rec
    pc, ps = ec / nc, es / ns
    rec.value, rec.baseline = pc - ps, ps
    seen = (f"error rate canary {_fmt(pc)} ({ec:.0f} of {nc:.0f}) vs stable {_fmt(ps)} ({es:.0f} of {ns:.0f}), "
            f"{pc - ps:+.4g}")
    _bounded(rec, lambda z: stats.newcombe(ec, nc, es, ns, z), limit,
             nc >= spec.min_requests and ns >= spec.min_requests, nc, spec, fail_level, pass_level, seen,
             f"more than {limit:+.4g} above the stable's", f"within {limit:+.4g} of the stable's")
    return rec


def _latency(c: Comparison, canary: Track, stable: Track, spec: Analysis, time: str, fail_level: float,
             pass_level: float | None) -> AnalysisRecord:
    ratio = c.check.max_ratio or 1.0
    q = int(c.check.name.removeprefix("latency-p")) / 100
    nc, ns = stats.total(canary.buckets), stats.total(stable.buckets)
    rec = AnalysisRecord(metric=c.metric, max=ratio, verdict="Inconclusive", time=time)
    qs, qc = stats.quantile(q, stable.buckets), stats.quantile(q, canary.buckets)
    if nc <= 0 or qc is None:
        rec.message = "no canary requests in the window"
        return rec
    if ns <= 0 or qs is None or qs <= 0:
        rec.message = "the stable served no requests in the window: nothing to compare with"
        return rec
    limit, allowed = ratio * qs, 1 - q
    slow = max(0.0, nc - stats.count_below(canary.buckets, limit, lower=0.0))
    rec.value, rec.baseline = qc / qs, qs
    name = c.check.name.removeprefix("latency-")
    seen = (f"{name} canary {_fmt(qc)}s vs stable {_fmt(qs)}s (x{qc / qs:.3g}); {slow:.0f} of {nc:.0f} canary "
            f"requests slower than {ratio:g} x the stable's {name} ({_fmt(limit)}s), {_pct(allowed)} allowed")
    _bounded(rec, lambda z: stats.wilson(slow, nc, z), allowed, nc >= spec.min_requests and ns >= spec.min_requests,
             nc, spec, fail_level, pass_level, seen, f"slower than x{ratio:g} the stable's",
             f"within x{ratio:g} of the stable's")
    return rec


def _drift(c: Comparison, reference: list[tuple[float, float]], current: list[tuple[float, float]], spec: Analysis,
           fail_level: float, pass_level: float | None) -> tuple[Verdict, float, float, float, float, float, str]:
    """(verdict, confidence, psi, fail confidence, pass confidence, canary count, why) of one histogram pair."""
    limit = c.check.drift_threshold
    nr, nc = stats.total(reference), stats.total(current)
    if nr <= 0 or nc <= 0:
        why = "no canary predictions in the window" if nc <= 0 else "the stable made no predictions in the window"
        return "Inconclusive", 0.5, math.nan, 0.0, 0.0, nc, why
    value, bins = stats.psi(reference, current)
    fail_conf = stats.drift_confidence(value, bins, nr, nc, limit)
    pass_conf = 1 - fail_conf
    enough = nc >= spec.min_requests and nr >= spec.min_requests
    verdict, conf = _decide(fail_conf, pass_conf, enough, fail_level, pass_level)
    why = "" if verdict != "Inconclusive" else _why_inconclusive(enough, nc, spec, fail_conf, pass_conf, fail_level,
                                                                pass_level, "predictions")
    return verdict, conf, value, fail_conf, pass_conf, nc, why


def _drift_record(c: Comparison, canary: Track, stable: Track, spec: Analysis, time: str, fail_level: float,
                  pass_level: float | None) -> AnalysisRecord:
    limit = c.check.drift_threshold
    rec = AnalysisRecord(metric=c.metric, max=limit, verdict="Inconclusive", time=time)
    if c.check.name == "prediction-drift":
        pairs = {"predictions": (stable.buckets, canary.buckets)}
    else:
        pairs = {f"feature {f}": (stable.features.get(f, []), canary.features.get(f, []))
                 for f in sorted({*stable.features, *canary.features})}
        if not pairs:
            rec.message = "no input-feature histograms in the window (modeldeploy_input_feature)"
            return rec
    results = {what: _drift(c, ref, cur, spec, fail_level, pass_level) for what, (ref, cur) in pairs.items()}
    # The worst pair decides: a failing one, else an inconclusive one, else the least certain pass.
    order = {"Fail": 0, "Inconclusive": 1, "Pass": 2}
    what, (verdict, conf, value, _, _, n, why) = min(
        results.items(), key=lambda kv: (order[kv[1][0]], -kv[1][3]))
    rec.verdict, rec.confidence = verdict, round(conf, 6)
    rec.value = None if math.isnan(value) else value
    subject = "the canary's predictions" if c.check.name == "prediction-drift" else f"the canary's inputs ({what})"
    psi = f"PSI {_fmt(value)} of {subject} against the stable's over {n:.0f} canary predictions"
    if verdict == "Fail":
        rec.message = f"{psi}: above {_fmt(limit)} with {_pct(conf)} confidence"
    elif verdict == "Pass":
        rec.message = f"{psi}: within {_fmt(limit)} with {_pct(conf)} confidence"
    else:
        rec.message = why if math.isnan(value) else f"{psi}: {why}"
    return rec


def compare(c: Comparison, spec: Analysis, time: str, fail_level: float,
            pass_level: float | None) -> AnalysisRecord:
    """Judge one baseline check. `pass_level` None: an in-step measurement, which can only fail."""
    if c.error is not None or c.canary is None or c.stable is None:
        why = f"provider error: {c.error}" if c.error else "query returned no data"
        return AnalysisRecord(metric=c.metric, verdict="Error", time=time, message=f"{c.metric}: {why}")
    if c.check.name == "error-rate":
        rec = _error_rate(c, c.canary, c.stable, spec, time, fail_level, pass_level)
    elif c.check.name.startswith("latency-p"):
        rec = _latency(c, c.canary, c.stable, spec, time, fail_level, pass_level)
    else:
        rec = _drift_record(c, c.canary, c.stable, spec, time, fail_level, pass_level)
    rec.message = f"{rec.metric}: {rec.message}"
    return rec


def attribute(records: list[AnalysisRecord]) -> list[AnalysisRecord]:
    """When input-drift says the tracks' inputs differ, neither it nor a prediction drift is the canary's
    fault: both become Inconclusive (the router did not split one stream at random, or the traffic moved
    between the two windows' pods)."""
    inputs = next((r for r in records if r.metric == "input-drift" and r.verdict == "Fail"), None)
    if inputs is None:
        return records
    inputs.verdict = "Inconclusive"
    inputs.message = f"{INPUTS_DIFFER}: {inputs.message}; prediction drift is not attributed to the model"
    for r in records:
        if r.metric == "prediction-drift" and r.verdict == "Fail":
            r.verdict = "Inconclusive"
            r.message += f" - but {INPUTS_DIFFER} (input-drift), so it is not attributed to the model"
    return records


NO_SERIES = ("Prometheus has no series for the canary's pods at all (not even `up`): the pod labels "
             "modeldeploy.io/name, /track and /revision are not relabelled onto the series, or no scrape config or "
             "PodMonitor selects the pods (see manifests/monitoring)")


def analyse(spec: Analysis, requests: Measurement | None, measurements: list[Measurement], time: str,
            targets: Measurement | None = None, comparisons: list[Comparison] | None = None) -> AnalysisResult:
    """Combine: traffic gate first (inconclusive), then any Fail, then any Error, then any Inconclusive
    baseline check, else Pass. Below the traffic gate only a baseline check proven failing can decide
    (Fail); nothing passes there.

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
            proven = [r for r in attribute([compare(c, spec, time, spec.confidence, spec.pass_confidence)
                                            for c in comparisons or []]) if r.verdict == "Fail"]
            if proven:
                return AnalysisResult("Fail", [rec, *proven], "; ".join(r.message for r in proven))
            return AnalysisResult("Inconclusive", [rec], rec.message)
        records.append(AnalysisRecord(metric="requests", value=n, min=float(spec.min_requests), verdict="Pass",
                                      time=time, message=f"{n:.0f} canary requests in the window"))
    judged = [judge(m, time) for m in measurements]
    judged += attribute([compare(c, spec, time, spec.confidence, spec.pass_confidence) for c in comparisons or []])
    records += judged
    by_verdict = {v: [r for r in judged if r.verdict == v] for v in ("Fail", "Error", "Inconclusive")}
    if by_verdict["Fail"]:
        return AnalysisResult("Fail", records, "; ".join(r.message for r in by_verdict["Fail"]))
    if by_verdict["Error"]:
        return AnalysisResult("Error", records, "; ".join(f"{r.metric}: {r.message}" for r in by_verdict["Error"]))
    if by_verdict["Inconclusive"]:
        return AnalysisResult("Inconclusive", records,
                              "; ".join(r.message for r in by_verdict["Inconclusive"]))
    return AnalysisResult("Pass", records, "all checks passed")


def probe(spec: Analysis, requests: Measurement, errors: Measurement | None, measurements: list[Measurement],
          time: str, alpha: float, suspects: int, comparisons: list[Comparison] | None = None) -> AnalysisResult:
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
    for rec in attribute([compare(c, spec, time, 1 - alpha, None) for c in comparisons or []]):
        if rec.verdict == "Fail":
            rec.early = True
            records.append(rec)
    if records:
        return AnalysisResult("Fail", records, "; ".join(r.message for r in records), kind="probe")
    return AnalysisResult("Pass", [], "no failure proven yet", kind="probe", suspect=suspect)
