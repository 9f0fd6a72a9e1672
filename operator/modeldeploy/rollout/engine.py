"""The rollout state machine: `next_step(md, view, analysis, now) -> Decision`. Pure.

Every piece of rollout state lives in `.status` (canary revision, step, step start time,
failure/inconclusive/provider-error counters, failed revisions, stable model, history), so an
operator restarted at any moment reads the same status and takes the same decision. The
controller supplies what it observed (`View`) and, when an analysis was due, its result.

States and transitions (spec.rollout.strategy = Canary):

    no stable yet ............ deploy spec.model as stable directly (nothing to compare against)
    spec == stable ........... steady; a running canary (spec reverted) is cancelled
    spec failed before ....... stay RolledBack on the stable until spec.model changes
    spec was stable recently . fast rollback: promote without analysis
    new spec ................. canary at steps[0]; a newer spec mid-canary restarts at steps[0]
    canary, step due ......... Pass -> next step or promote; Fail -> count, roll back at failureLimit;
                               Error -> count, roll back at errorLimit; Inconclusive -> hold, and
                               give up (Failed) at inconclusiveLimit — never promote without data
    abort annotation ......... roll back now;  promote annotation .... promote now
    spec.paused .............. hold everything where it is
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from modeldeploy.api import (
    HistoryEntry,
    ModelDeployment,
    ModelDeploymentStatus,
    ModelSpec,
    Phase,
    Revision,
    parse_duration,
)
from modeldeploy.resources.common import revision_hash
from modeldeploy.rollout.analysis import AnalysisResult

ANNOTATION_PROMOTE = "modeldeploy.io/promote"
ANNOTATION_ABORT = "modeldeploy.io/abort"
FAILED_REVISIONS_KEPT = 10
ANALYSES_KEPT = 10


@dataclass
class View:
    """What the controller observed that the engine needs."""

    canary_ready: bool = False          # the canary Deployment has all its pods ready
    canary_stuck: bool = False          # the canary Deployment exceeded its progress deadline
    annotations: dict[str, str] = field(default_factory=dict)


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
    weight: int                          # desired canary traffic percent
    phase: Phase | None = None           # a rollout-specific phase (None: derive from the Deployment)
    message: str = ""
    notes: list[Note] = field(default_factory=list)
    promoted: bool = False
    rolled_back: bool = False
    analysis_due_in: float | None = None  # seconds until the next analysis (requeue hint)
    consume: list[str] = field(default_factory=list)  # annotations acted upon, to remove


def revision_of(model: ModelSpec) -> Revision:
    return Revision(image=model.image, bento=model.bento, hash=revision_hash(model))


def parse_time(text: str | None) -> datetime | None:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) if text else None


def fmt_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def analysis_due_in(md: ModelDeployment, now: datetime) -> float | None:
    """Seconds until the current step's analysis is due (<= 0: due now); None when no canary runs."""
    st = md.status
    if st.canary is None or st.current_step <= 0 or md.spec.paused:
        return None
    started = parse_time(st.step_started_at)
    if started is None:
        return 0.0
    return parse_duration(md.spec.rollout.canary.interval) - (now - started).total_seconds()


def _push_history(status: ModelDeploymentStatus, rev: Revision, result: str, reason: str, now: str,
                  limit: int) -> None:
    status.history = [HistoryEntry(revision=rev, result=result, reason=reason, time=now), *status.history][:limit]


def _reset_canary(status: ModelDeploymentStatus) -> None:
    status.canary = None
    status.canary_weight = 0
    status.current_step = 0
    status.step_started_at = None
    status.failed_checks = 0
    status.inconclusive_checks = 0
    status.provider_errors = 0


def next_step(md: ModelDeployment, view: View, analysis: AnalysisResult | None, now: datetime) -> Decision:
    spec = md.spec
    st = md.status.model_copy(deep=True)
    now_s = fmt_time(now)
    target_model = spec.model
    target = revision_of(target_model)
    limit = spec.revision_history_limit

    # No stable yet, or a plain rolling update: the stable Deployment takes the spec directly.
    if st.stable_model is None or spec.rollout.strategy == "Rolling":
        d = Decision(st, stable_model=target_model, canary_model=None, weight=0)
        if st.canary is not None:
            _push_history(st, st.canary, "Superseded", "strategy changed to Rolling", now_s, limit)
            d.notes.append(Note("Normal", "CanaryCancelled", f"canary {st.canary.hash} cancelled"))
            _reset_canary(st)
        return d

    stable_model = st.stable_model
    stable_rev = revision_of(stable_model)

    if target.hash == stable_rev.hash:
        d = Decision(st, stable_model=stable_model, canary_model=None, weight=0)
        if st.canary is not None:
            _push_history(st, st.canary, "Superseded", "spec reverted to the stable revision", now_s, limit)
            d.notes.append(Note("Normal", "CanaryCancelled",
                                f"canary {st.canary.hash} cancelled: spec is back at stable {stable_rev.hash}"))
            _reset_canary(st)
        return d

    if target.hash in st.failed_revisions:
        last = next((h for h in st.history if h.revision.hash == target.hash), None)
        reason = last.reason if last else "failed analysis"
        phase = Phase.FAILED if last is not None and last.result == "Failed" else Phase.ROLLED_BACK
        return Decision(st, stable_model=stable_model, canary_model=None, weight=0, phase=phase,
                        message=f"revision {target.hash} ({target.image}) was rolled back: {reason}; serving stable "
                                f"{stable_rev.hash}. Change spec.model to try another revision.")

    known_good = any(h.revision.hash == target.hash and h.result in ("Superseded", "Promoted")
                     for h in st.history) and (st.canary is None or st.canary.hash != target.hash)
    if known_good:
        d = Decision(st, stable_model=target_model, canary_model=None, weight=0, promoted=True)
        d.notes.append(Note("Normal", "FastRollback", f"revision {target.hash} ({target.image}) ran healthy as "
                                                      "stable recently: promoted without analysis"))
        if st.canary is not None:
            _push_history(st, st.canary, "Superseded", f"fast rollback to {target.hash}", now_s, limit)
            _reset_canary(st)
        st.stable_model = target_model
        return d

    steps = spec.rollout.canary.steps
    notes: list[Note] = []
    if st.canary is None or st.canary.hash != target.hash:
        if st.canary is not None:
            _push_history(st, st.canary, "Superseded", f"newer revision {target.hash} applied mid-canary", now_s,
                          limit)
            notes.append(Note("Normal", "CanaryRestarted", f"canary {st.canary.hash} superseded by {target.hash}: "
                                                           "restarting at step 1"))
        _reset_canary(st)
        st.canary = target
        st.current_step = 1
        st.step_started_at = now_s
        st.last_analysis = []
        notes.append(Note("Normal", "CanaryStarted", f"canary {target.hash} ({target.image}) started at "
                                                     f"{steps[0]}% (steps {steps})"))
        d = Decision(st, stable_model=stable_model, canary_model=target_model, weight=steps[0],
                     phase=Phase.PROGRESSING, notes=notes)
        d.message = f"canary {target.hash} at step 1/{len(steps)} ({steps[0]}%)"
        d.analysis_due_in = parse_duration(spec.rollout.canary.interval)
        return d

    # A canary is running for the current spec.
    weight = steps[st.current_step - 1]
    d = Decision(st, stable_model=stable_model, canary_model=target_model, weight=weight, phase=Phase.PROGRESSING,
                 notes=notes)

    def rollback(reason: str, phase: Phase = Phase.ROLLED_BACK) -> Decision:
        assert st.canary is not None
        rev = st.canary
        _push_history(st, rev, "Failed" if phase == Phase.FAILED else "RolledBack", reason, now_s, limit)
        st.failed_revisions = [rev.hash, *[h for h in st.failed_revisions if h != rev.hash]][:FAILED_REVISIONS_KEPT]
        _reset_canary(st)
        d.canary_model, d.weight, d.phase, d.rolled_back = None, 0, phase, True
        d.message = (f"canary {rev.hash} ({rev.image}) rolled back: {reason}; serving stable {stable_rev.hash}")
        d.notes.append(Note("Warning", "RolledBack" if phase == Phase.ROLLED_BACK else "CanaryFailed", d.message))
        return d

    def promote(reason: str) -> Decision:
        assert st.canary is not None
        rev = st.canary
        _push_history(st, stable_rev, "Superseded", f"promoted {rev.hash}: {reason}", now_s, limit)
        _reset_canary(st)
        st.stable_model = target_model
        d.stable_model, d.canary_model, d.weight, d.promoted = target_model, None, 0, True
        d.phase = None  # the stable Deployment now rolls; its progress decides the phase
        d.notes.append(Note("Normal", "Promoted", f"canary {rev.hash} ({rev.image}) promoted: {reason}"))
        return d

    if ANNOTATION_ABORT in view.annotations:
        d.consume.append(ANNOTATION_ABORT)
        return rollback("aborted by the user (annotation modeldeploy.io/abort)")
    if ANNOTATION_PROMOTE in view.annotations:
        d.consume.append(ANNOTATION_PROMOTE)
        return promote("promoted by the user (annotation modeldeploy.io/promote)")
    if view.canary_stuck:
        return rollback(f"canary pods did not become ready within {spec.progress_deadline_seconds}s")
    if spec.paused:
        d.phase, d.message = Phase.PAUSED, f"paused at step {st.current_step}/{len(steps)} ({weight}%)"
        return d
    if not view.canary_ready:
        # The clock for a step starts when the canary can take its share of traffic.
        st.step_started_at = now_s
        d.message = f"canary {st.canary.hash if st.canary else ''} at step {st.current_step}/{len(steps)}: " \
                    "waiting for canary pods to be ready"
        d.analysis_due_in = parse_duration(spec.rollout.canary.interval)
        return d

    a = spec.rollout.analysis
    if analysis is not None:
        st.last_analysis = [*analysis.records, *st.last_analysis][:ANALYSES_KEPT]
        st.step_started_at = now_s
        if analysis.verdict == "Fail":
            st.failed_checks += 1
            if st.failed_checks >= a.failure_limit:
                return rollback(analysis.reason)
            d.notes.append(Note("Warning", "AnalysisFailed", f"{analysis.reason} ({st.failed_checks}/"
                                                             f"{a.failure_limit} failures tolerated)"))
        elif analysis.verdict == "Error":
            st.provider_errors += 1
            if st.provider_errors >= a.error_limit:
                return rollback(f"metrics unavailable {st.provider_errors} times in a row: {analysis.reason}")
            d.notes.append(Note("Warning", "AnalysisError",
                                f"{analysis.reason} ({st.provider_errors}/{a.error_limit})"))
        elif analysis.verdict == "Inconclusive":
            st.inconclusive_checks += 1
            if st.inconclusive_checks >= a.inconclusive_limit:
                return rollback(f"not enough traffic to judge the canary after {st.inconclusive_checks} analyses: "
                                f"{analysis.reason}", Phase.FAILED)
        else:
            st.provider_errors = 0
            st.inconclusive_checks = 0
            if st.current_step >= len(steps):
                return promote(f"all {len(steps)} steps passed analysis")
            st.current_step += 1
            weight = steps[st.current_step - 1]
            d.weight = weight
            d.notes.append(Note("Normal", "StepAdvanced", f"analysis passed: canary to {weight}% "
                                                          f"(step {st.current_step}/{len(steps)})"))
    d.message = f"canary {st.canary.hash if st.canary else ''} at step {st.current_step}/{len(steps)} ({d.weight}%)"
    if st.inconclusive_checks:
        d.message += f"; holding: {st.inconclusive_checks} inconclusive analyses (not enough traffic)"
    d.analysis_due_in = analysis_due_in(md.model_copy(update={"status": st}), now)
    return d
