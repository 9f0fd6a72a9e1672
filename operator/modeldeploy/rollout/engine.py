"""The rollout state machine: `measurement_due(md, view, now)` and `next_step(md, view, result, now)`. Pure.

Every piece of rollout state lives in `.status` (canary revision, step, when the step's analysis
window began, failure/inconclusive/provider-error counters, failed revisions, stable model,
history, the last manual request), so an operator restarted at any moment reads the same status
and takes the same decision. The controller supplies what it observed (`View`), asks
`measurement_due` what to measure, and hands the result back to `next_step`; it decides nothing.

States and transitions (spec.rollout.strategy = Canary):

    no stable yet ............ deploy spec.model as stable directly (nothing to compare against)
    spec == stable ........... steady; a running canary (spec reverted) is cancelled
    spec failed before ....... stay RolledBack on the stable until spec.model changes
    spec served as stable .... fast rollback: promote without analysis (only a revision that was
                               really stable: a cancelled canary never counts)
    new spec ................. canary at steps[0]; a newer spec mid-canary cancels it, restarts at steps[0]
    canary, each step ........ the step's window starts once the canary's pods are ready (it does not
                               restart when they flap later); in-step measurements fail fast when a
                               failure is certain; the step passes only at its end:
                               Pass -> next step or promote; Fail -> count, roll back at failureLimit;
                               Error -> count, roll back at errorLimit; Inconclusive -> hold, and
                               roll back (phase Failed) at inconclusiveLimit — never promote without data
    abort / promote request .. act on the canary the request is bound to; a stale one is ignored with
                               an Event (see `_requests`); one handled before and left on the object
                               (a crash before its removal) is not acted on again (see `next_step`)
    spec.paused .............. hold everything where it is

Traffic: the routed weight is 0 whenever the canary has no ready pod (or its pods are blocked);
pods are still sized for the step's weight so they can become ready.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from modeldeploy.api import (
    TIMELINE_KEPT,
    HistoryEntry,
    ManualRequest,
    ModelDeployment,
    ModelDeploymentStatus,
    ModelSpec,
    Phase,
    Revision,
    TimelineEntry,
    TimelineVerdict,
    parse_duration,
)
from modeldeploy.resources.common import revision_hash
from modeldeploy.rollout.analysis import AnalysisResult

ANNOTATION_PROMOTE = "modeldeploy.io/promote"
ANNOTATION_ABORT = "modeldeploy.io/abort"
FAILED_REVISIONS_KEPT = 10
ANALYSES_KEPT = 10
REVISION_HASH = re.compile(r"^[0-9a-f]{10}$")
# A probe runs at most this early before its period is up (reconciles triggered by events).
PROBE_SLACK = 0.9


@dataclass
class View:
    """What the controller observed that the engine needs."""

    canary_ready: bool = False          # the canary Deployment (current revision) has all its pods ready
    canary_available: bool = False      # ... has at least one ready pod (it can take traffic)
    canary_stuck: bool = False          # the canary Deployment exceeded its progress deadline
    blocked: bool = False               # a semantic problem (e.g. a missing Secret): no canary pods run
    annotations: dict[str, str] = field(default_factory=dict)
    last_probe_at: datetime | None = None  # the last in-step measurement (controller memory; None after restart)


@dataclass
class MeasureRequest:
    """What the controller must measure now, for which canary revision, over which window."""

    kind: Literal["step", "probe"]
    revision: str
    window: str          # PromQL duration: the step's interval, or the time since the step's window began
    alpha: float = 0.01  # probe: the per-measurement false-failure probability


@dataclass
class Note:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Decision:
    status: ModelDeploymentStatus
    stable_model: ModelSpec              # what the stable Deployment runs
    canary_model: ModelSpec | None       # what the canary Deployment runs (None: no canary pods)
    weight: int                          # the step's canary traffic percent (sizes the canary pods)
    route_weight: int = 0                # the percent routing objects carry: 0 until the canary can serve
    phase: Phase | None = None           # a rollout-specific phase (None: derive from the Deployment)
    message: str = ""
    notes: list[Note] = field(default_factory=list)
    promoted: bool = False
    rolled_back: bool = False
    analysis_due_in: float | None = None  # seconds until the next measurement (requeue hint)
    consume: list[str] = field(default_factory=list)  # annotations handled (applied or ignored), to remove


def revision_of(model: ModelSpec) -> Revision:
    return Revision(image=model.image, bento=model.bento, hash=revision_hash(model))


def parse_time(text: str | None) -> datetime | None:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) if text else None


def fmt_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _interval(md: ModelDeployment) -> float:
    return parse_duration(md.spec.rollout.canary.interval)


def _probe_period(md: ModelDeployment) -> float:
    return min(parse_duration(md.spec.rollout.analysis.measurement_interval), _interval(md))


def _canary_current(md: ModelDeployment) -> bool:
    st = md.status
    return (md.spec.rollout.strategy == "Canary" and st.stable_model is not None and st.canary is not None
            and st.canary.hash == revision_hash(md.spec.model) and st.current_step > 0)


def analysis_due_in(md: ModelDeployment, now: datetime) -> float | None:
    """Seconds until the current step's analysis is due (<= 0: due now); None when no window runs."""
    st = md.status
    if not _canary_current(md) or md.spec.paused:
        return None
    started = parse_time(st.step_ready_at)
    if started is None:
        return None
    return _interval(md) - (now - started).total_seconds()


def measurement_due(md: ModelDeployment, view: View, now: datetime) -> MeasureRequest | None:
    """The measurement the controller must take now, if any: the step's analysis when its window is
    over, else an in-step probe when its period is up. Nothing without a ready canary pod."""
    due = analysis_due_in(md, now)
    canary = md.status.canary
    if due is None or canary is None or not view.canary_available or view.blocked:
        return None
    if due <= 0:
        return MeasureRequest("step", canary.hash, md.spec.rollout.canary.interval)
    a = md.spec.rollout.analysis
    elapsed = _interval(md) - due
    period = _probe_period(md)
    if not a.metrics or elapsed < period:
        return None
    if view.last_probe_at is not None and (now - view.last_probe_at).total_seconds() < period * PROBE_SLACK:
        return None
    looks = max(1, math.ceil(_interval(md) / period))
    return MeasureRequest("probe", canary.hash, f"{math.ceil(elapsed)}s", alpha=(1 - a.confidence) / looks)


def _next_wake(md: ModelDeployment, status: ModelDeploymentStatus, now: datetime) -> float | None:
    """Seconds until the next measurement for this status (a requeue hint); None: nothing timed."""
    m = md.model_copy(update={"status": status})
    due = analysis_due_in(m, now)
    if due is None:
        return _interval(md) if _canary_current(m) and not md.spec.paused else None
    if due <= 0:  # due but not measured (no ready canary pod): its pods' events wake us sooner
        return _probe_period(md)
    if not md.spec.rollout.analysis.metrics:
        return due
    started = parse_time(status.step_ready_at)
    assert started is not None
    elapsed = (now - started).total_seconds()
    period = _probe_period(md)
    next_probe = period - (elapsed % period) if elapsed >= period else period - elapsed
    return min(due, next_probe)


def _push_history(status: ModelDeploymentStatus, rev: Revision, result: str, reason: str, now: str,
                  limit: int) -> None:
    status.history = [HistoryEntry(revision=rev, result=result, reason=reason, time=now), *status.history][:limit]


def _mark(status: ModelDeploymentStatus, verdict: TimelineVerdict, now: str) -> None:
    """Append to status.timeline (bounded): the step and the traffic share the canary has now."""
    entry = TimelineEntry(step=status.current_step, weight=status.canary_weight, verdict=verdict, time=now)
    status.timeline = [*status.timeline, entry][-TIMELINE_KEPT:]


def _reset_canary(status: ModelDeploymentStatus) -> None:
    status.canary = None
    status.canary_weight = 0
    status.current_step = 0
    status.step_started_at = None
    status.step_ready_at = None
    status.failed_checks = 0
    status.inconclusive_checks = 0
    status.provider_errors = 0
    status.probe_failures = 0


def served_as_stable(status: ModelDeploymentStatus, revision_hash_: str) -> bool:
    """A revision that really served as stable and was replaced (not a cancelled or failed canary)."""
    return any(h.revision.hash == revision_hash_ and h.result == "Superseded" for h in status.history)


@dataclass
class _Request:
    action: Literal["promote", "abort"]
    annotation: str
    value: str


def _requests(view: View) -> list[_Request]:
    """Manual requests present, abort first (an abort wins over a promote)."""
    out = []
    for action, ann in (("abort", ANNOTATION_ABORT), ("promote", ANNOTATION_PROMOTE)):
        if ann in view.annotations:
            out.append(_Request(action, ann, view.annotations[ann].strip()))  # type: ignore[arg-type]
    return out


def _request_key(annotation: str, value: str) -> str:
    return f"{annotation}={value}"


def _ignored(st: ModelDeploymentStatus, notes: list[Note], r: _Request, why: str, now_s: str) -> None:
    """Record a request that is not acted on: in status.lastRequest and as a Warning Event."""
    st.last_request = ManualRequest(action=r.action, value=r.value, result="Ignored", reason=why, time=now_s)
    notes.append(Note("Warning", "RequestIgnored", f"{r.action} request ({r.annotation}={r.value!r}) ignored: {why}"))


def next_step(md: ModelDeployment, view: View, analysis: AnalysisResult | None, now: datetime) -> Decision:
    """The decision for this reconcile (see the module docstring).

    A request handled before (status.handledRequests) that is still on the object was left behind:
    the operator stopped between the status write and the annotation removal. It is removed again
    and never acted on a second time — otherwise one ignored as stale would act on the next canary.
    """
    handled = set(md.status.handled_requests)
    present = {r.annotation: r for r in _requests(view)}
    left = [r for r in present.values() if _request_key(r.annotation, r.value) in handled]
    if left:
        view = replace(view, annotations={k: v for k, v in view.annotations.items()
                                          if k not in {r.annotation for r in left}})
    d = _decide(md, view, analysis, now)
    for r in left:
        d.consume.append(r.annotation)
        d.notes.append(Note("Warning", "RequestIgnored", f"{r.action} request ({r.annotation}={r.value!r}) ignored: "
                                                         "it was already handled (left on the object when the "
                                                         "operator stopped); removing it"))
    d.status.handled_requests = sorted({_request_key(a, present[a].value) for a in d.consume})
    return d


def _decide(md: ModelDeployment, view: View, analysis: AnalysisResult | None, now: datetime) -> Decision:
    spec = md.spec
    st = md.status.model_copy(deep=True)
    now_s = fmt_time(now)
    target_model = spec.model
    target = revision_of(target_model)
    limit = spec.revision_history_limit
    # A canary was already running for this spec before this reconcile: the only canary a
    # promote/abort request can be meant for.
    running = _canary_current(md)
    requests = _requests(view)
    notes: list[Note] = []

    def ignore_requests(why: str, keep_bound_to: str | None = None) -> list[str]:
        """Remove requests that cannot apply, each with an Event; keep one bound to a canary about to run."""
        consumed = []
        for r in requests:
            if keep_bound_to is not None and r.value == keep_bound_to:
                continue
            consumed.append(r.annotation)
            _ignored(st, notes, r, why, now_s)
        return consumed

    # No stable yet, or a plain rolling update: the stable Deployment takes the spec directly.
    if st.stable_model is None or spec.rollout.strategy == "Rolling":
        d = Decision(st, stable_model=target_model, canary_model=None, weight=0, notes=notes)
        if st.canary is not None:
            _push_history(st, st.canary, "Cancelled", "strategy changed to Rolling", now_s, limit)
            notes.append(Note("Normal", "CanaryCancelled", f"canary {st.canary.hash} cancelled"))
            _reset_canary(st)
        d.consume = ignore_requests("no canary is running")
        return d

    stable_model = st.stable_model
    stable_rev = revision_of(stable_model)

    if target.hash == stable_rev.hash:
        d = Decision(st, stable_model=stable_model, canary_model=None, weight=0, notes=notes)
        if st.canary is not None:
            _push_history(st, st.canary, "Cancelled", "spec reverted to the stable revision", now_s, limit)
            notes.append(Note("Normal", "CanaryCancelled",
                              f"canary {st.canary.hash} cancelled: spec is back at stable {stable_rev.hash}"))
            _reset_canary(st)
        d.consume = ignore_requests("no canary is running")
        return d

    if target.hash in st.failed_revisions:
        last = next((h for h in st.history if h.revision.hash == target.hash), None)
        reason = last.reason if last else "failed analysis"
        phase = Phase.FAILED if last is not None and last.result == "Failed" else Phase.ROLLED_BACK
        d = Decision(st, stable_model=stable_model, canary_model=None, weight=0, phase=phase, notes=notes,
                     message=f"revision {target.hash} ({target.image}) was rolled back: {reason}; serving stable "
                             f"{stable_rev.hash}. Change spec.model to try another revision.")
        d.consume = ignore_requests(f"revision {target.hash} was already rolled back")
        return d

    if served_as_stable(st, target.hash) and not running:
        d = Decision(st, stable_model=target_model, canary_model=None, weight=0, promoted=True, notes=notes)
        notes.append(Note("Normal", "FastRollback", f"revision {target.hash} ({target.image}) served as stable "
                                                    "before: promoted without analysis"))
        if st.canary is not None:
            _push_history(st, st.canary, "Cancelled", f"fast rollback to {target.hash}", now_s, limit)
            _reset_canary(st)
        _push_history(st, stable_rev, "Superseded", f"fast rollback to {target.hash}", now_s, limit)
        st.stable_model = target_model
        d.consume = ignore_requests("no canary is running (fast rollback)")
        return d

    steps = spec.rollout.canary.steps
    if not running:
        if st.canary is not None:
            _push_history(st, st.canary, "Cancelled", f"newer revision {target.hash} applied mid-canary", now_s,
                          limit)
            notes.append(Note("Normal", "CanaryRestarted", f"canary {st.canary.hash} superseded by {target.hash}: "
                                                           "restarting at step 1"))
        _reset_canary(st)
        st.canary = target
        st.current_step = 1
        st.step_started_at = now_s
        st.last_analysis = []
        st.timeline = []
        _mark(st, "Started", now_s)
        notes.append(Note("Normal", "CanaryStarted", f"canary {target.hash} ({target.image}) started at "
                                                     f"{steps[0]}% (steps {steps})"))
        d = Decision(st, stable_model=stable_model, canary_model=target_model, weight=steps[0],
                     phase=Phase.PROGRESSING, notes=notes)
        d.message = f"canary {target.hash} at step 1/{len(steps)} ({steps[0]}%): waiting for canary pods to be ready"
        d.consume = ignore_requests(f"it was made before canary {target.hash} started", keep_bound_to=target.hash)
        d.analysis_due_in = _interval(md)
        return d

    # A canary is running for the current spec.
    assert st.canary is not None
    rev = st.canary
    if st.current_step > len(steps):  # the step list was shortened mid-canary: continue at its last step
        notes.append(Note("Normal", "StepsChanged", f"spec.rollout.canary.steps now has {len(steps)} steps: canary "
                                                    f"continues at step {len(steps)} ({steps[-1]}%)"))
        st.current_step = len(steps)
    weight = steps[st.current_step - 1]
    d = Decision(st, stable_model=stable_model, canary_model=target_model, weight=weight, phase=Phase.PROGRESSING,
                 notes=notes)

    def finish(msg_suffix: str = "") -> Decision:
        d.route_weight = d.weight if view.canary_available and not view.blocked else 0
        d.message = f"canary {rev.hash} at step {st.current_step}/{len(steps)} ({d.weight}%){msg_suffix}"
        if st.inconclusive_checks:
            d.message += (f"; holding: {st.inconclusive_checks} inconclusive analyses (not enough traffic or evidence "
                          "to decide)")
        d.analysis_due_in = _next_wake(md, st, now)
        return d

    def rollback(reason: str, phase: Phase = Phase.ROLLED_BACK) -> Decision:
        _push_history(st, rev, "Failed" if phase == Phase.FAILED else "RolledBack", reason, now_s, limit)
        _mark(st, "Failed" if phase == Phase.FAILED else "RolledBack", now_s)
        st.failed_revisions = [rev.hash, *[h for h in st.failed_revisions if h != rev.hash]][:FAILED_REVISIONS_KEPT]
        _reset_canary(st)
        d.canary_model, d.weight, d.route_weight, d.phase, d.rolled_back = None, 0, 0, phase, True
        d.message = f"canary {rev.hash} ({rev.image}) rolled back: {reason}; serving stable {stable_rev.hash}"
        d.notes.append(Note("Warning", "RolledBack" if phase == Phase.ROLLED_BACK else "CanaryFailed", d.message))
        d.analysis_due_in = None
        return d

    def promote(reason: str) -> Decision:
        _push_history(st, stable_rev, "Superseded", f"promoted {rev.hash}: {reason}", now_s, limit)
        _mark(st, "Promoted", now_s)
        _reset_canary(st)
        st.stable_model = target_model
        d.stable_model, d.canary_model, d.weight, d.route_weight, d.promoted = target_model, None, 0, 0, True
        d.phase = None  # the stable Deployment now rolls; its progress decides the phase
        d.notes.append(Note("Normal", "Promoted", f"canary {rev.hash} ({rev.image}) promoted: {reason}"))
        d.analysis_due_in = None
        return d

    for r in requests:
        d.consume.append(r.annotation)
        bound = bool(REVISION_HASH.match(r.value))
        if bound and r.value != rev.hash:
            _ignored(st, notes, r, f"it names revision {r.value}, but the running canary is {rev.hash}", now_s)
            continue
        st.last_request = ManualRequest(action=r.action, value=r.value, revision=rev.hash, result="Applied",
                                        reason="requested by the user", time=now_s)
        others = [o.annotation for o in requests if o is not r and o.annotation not in d.consume]
        d.consume.extend(others)  # an abort wins; a promote beside it is moot
        if r.action == "abort":
            return rollback(f"aborted by the user (annotation {ANNOTATION_ABORT})")
        return promote(f"promoted by the user (annotation {ANNOTATION_PROMOTE})")
    if view.canary_stuck:
        return rollback(f"canary pods did not become ready within {spec.progress_deadline_seconds}s")
    if spec.paused:
        d.route_weight = d.weight if view.canary_available and not view.blocked else 0
        d.phase, d.message = Phase.PAUSED, f"paused at step {st.current_step}/{len(steps)} ({weight}%)"
        return d

    if st.step_ready_at is None:
        # The step's window starts when the canary can take its share of traffic: all its pods
        # ready, or — so that a canary whose size keeps changing (HPA) still finishes — some
        # ready and the step entered an interval ago. Later readiness flips never restart it.
        entered = parse_time(st.step_started_at) or now
        waited = (now - entered).total_seconds()
        if view.canary_ready or (view.canary_available and waited >= _interval(md)):
            st.step_ready_at = now_s
        else:
            return finish(": waiting for canary pods to be ready")

    a = spec.rollout.analysis
    if analysis is not None and analysis.revision not in (None, rev.hash):
        analysis = None  # measured for another canary: not evidence about this one
    if analysis is not None and analysis.kind == "probe":
        if analysis.verdict != "Fail":
            st.probe_failures = st.probe_failures + 1 if analysis.suspect else 0
            return finish()
        st.probe_failures = 0
    if analysis is not None:
        st.last_analysis = [*analysis.records, *st.last_analysis][:ANALYSES_KEPT]
        _mark(st, analysis.verdict, now_s)
        st.step_ready_at = now_s  # whatever the verdict, the next window starts now
        if analysis.verdict == "Fail":
            st.failed_checks += 1
            early = " (decided before the step's end)" if analysis.kind == "probe" else ""
            if st.failed_checks >= a.failure_limit:
                return rollback(analysis.reason + early)
            d.notes.append(Note("Warning", "AnalysisFailed", f"{analysis.reason}{early} ({st.failed_checks}/"
                                                             f"{a.failure_limit} failures tolerated)"))
        elif analysis.verdict == "Error":
            st.provider_errors += 1
            if st.provider_errors >= a.error_limit:
                return rollback(f"metrics unavailable {st.provider_errors} times in a row: {analysis.reason}")
            d.notes.append(Note("Warning", "AnalysisError",
                                f"{analysis.reason} ({st.provider_errors}/{a.error_limit})"))
        elif analysis.verdict == "Inconclusive":
            st.provider_errors = 0
            st.inconclusive_checks += 1
            if st.inconclusive_checks >= a.inconclusive_limit:
                return rollback(f"not enough traffic or evidence to judge the canary after {st.inconclusive_checks} "
                                f"analyses: {analysis.reason}", Phase.FAILED)
        else:
            st.provider_errors = 0
            st.inconclusive_checks = 0
            if st.current_step >= len(steps):
                return promote(f"all {len(steps)} steps passed analysis")
            st.current_step += 1
            st.step_started_at, st.step_ready_at = now_s, None
            d.weight = steps[st.current_step - 1]
            d.notes.append(Note("Normal", "StepAdvanced", f"analysis passed: canary to {d.weight}% "
                                                          f"(step {st.current_step}/{len(steps)})"))
            # The canary is resized for the new step; its window starts once it is ready at that size.
            view = View(canary_ready=False, canary_available=view.canary_available, blocked=view.blocked)
    return finish()
