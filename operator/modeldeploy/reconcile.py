"""The reconcile decision, as a pure function: (spec, observed children, now) -> (actions, status, events).

Data flows one way: the I/O layer (`modeldeploy.controller`) gathers what is in the cluster into
`Observed`, calls `plan`, executes the returned actions through `modeldeploy.k8s`, and writes
the returned status only when it differs. Nothing here talks to the API server, so every
branch is unit-tested with plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from modeldeploy.api import (
    Condition,
    HistoryEntry,
    ModelDeployment,
    ModelDeploymentStatus,
    Phase,
    Revision,
)
from modeldeploy.diff import is_subset
from modeldeploy.resources.common import LABEL_NAME, LABEL_REVISION, LABEL_TRACK, revision_hash
from modeldeploy.resources.deployment import build_deployment
from modeldeploy.resources.hpa import build_hpa
from modeldeploy.resources.pdb import build_pdb
from modeldeploy.resources.service import build_service

Obj = dict[str, Any]


@dataclass
class Observed:
    """What the cluster holds for one ModelDeployment (None = absent)."""

    stable: Obj | None = None
    canary: Obj | None = None
    service: Obj | None = None
    hpa: Obj | None = None
    pdb: Obj | None = None
    # Semantic problems found by looking things up (e.g. a referenced Secret that is missing).
    problems: list[str] = field(default_factory=list)


@dataclass
class Action:
    verb: Literal["apply", "delete"]
    kind: str
    name: str
    body: Obj | None = None


@dataclass
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Plan:
    actions: list[Action]
    status: ModelDeploymentStatus
    events: list[Event]


def revision_of(md: ModelDeployment) -> Revision:
    m = md.spec.model
    return Revision(image=m.image, bento=m.bento, hash=revision_hash(m))


def _template_hash(dep: Obj | None) -> str | None:
    if not dep:
        return None
    labels = dep.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    return labels.get(LABEL_REVISION)


def _want(desired: Obj | None, observed: Obj | None, kind: str, name: str, actions: list[Action]) -> None:
    """Append the write needed to get from observed to desired, if any."""
    if desired is None:
        if observed is not None:
            actions.append(Action("delete", kind, name))
    elif observed is None or not is_subset(desired, observed):
        actions.append(Action("apply", kind, name, desired))


@dataclass
class RolloutState:
    desired: int
    replicas: int
    updated: int
    ready: int
    available: int
    current_generation: bool
    deadline_exceeded: bool

    @property
    def rolled_out(self) -> bool:
        return (self.current_generation and self.updated >= self.desired and self.replicas == self.updated
                and self.available >= self.desired)


def rollout_state(dep: Obj) -> RolloutState:
    spec, st = dep.get("spec", {}), dep.get("status", {}) or {}
    conds = {c.get("type"): c for c in st.get("conditions", []) or []}
    prog = conds.get("Progressing", {})
    return RolloutState(
        desired=int(spec.get("replicas", 1)),
        replicas=int(st.get("replicas", 0) or 0),
        updated=int(st.get("updatedReplicas", 0) or 0),
        ready=int(st.get("readyReplicas", 0) or 0),
        available=int(st.get("availableReplicas", 0) or 0),
        current_generation=int(st.get("observedGeneration", 0) or 0) >= int(dep["metadata"].get("generation", 1)),
        deadline_exceeded=prog.get("status") == "False" and prog.get("reason") == "ProgressDeadlineExceeded",
    )


def set_condition(conditions: list[Condition], new: Condition, now: str) -> list[Condition]:
    """Replace the condition of the same type, keeping lastTransitionTime unless status changed."""
    out = []
    found = False
    for c in conditions:
        if c.type == new.type:
            found = True
            new.last_transition_time = c.last_transition_time if c.status == new.status else now
            out.append(new)
        else:
            out.append(c)
    if not found:
        new.last_transition_time = now
        out.append(new)
    order = {"Ready": 0, "Available": 1, "Progressing": 2, "Degraded": 3}
    return sorted(out, key=lambda c: order.get(c.type, 9))


def plan(md: ModelDeployment, observed: Observed, now: str) -> Plan:
    """Decide the writes and the new status for one ModelDeployment."""
    old = md.status
    actions: list[Action] = []
    events: list[Event] = []
    gen = int(md.metadata.get("generation", 1))
    target = revision_of(md)
    desired_stable = build_deployment(md, "stable", replicas=None if md.spec.autoscaling_on
                                      else md.spec.desired_replicas)

    # A semantic problem (e.g. missing Secret) must not take down what is running: keep the
    # current Deployment as it is, create nothing that would fail, and report it.
    blocked = bool(observed.problems)
    if not blocked:
        _want(desired_stable, observed.stable, "Deployment", desired_stable["metadata"]["name"], actions)
    _want(build_service(md), observed.service, "Service", md.name, actions)
    _want(build_hpa(md), observed.hpa, "HorizontalPodAutoscaler", md.name, actions)
    _want(build_pdb(md), observed.pdb, "PodDisruptionBudget", md.name, actions)
    if observed.canary is not None:  # until the canary engine owns it, a stray canary goes
        actions.append(Action("delete", "Deployment", observed.canary["metadata"]["name"]))

    status = old.model_copy(deep=True)
    status.observed_generation = gen
    status.selector = f"{LABEL_NAME}={md.name},{LABEL_TRACK}=stable"
    conds = list(status.conditions)
    dep = observed.stable
    template_current = dep is not None and _template_hash(dep) == target.hash and not any(
        a.kind == "Deployment" and a.verb == "apply" for a in actions)
    rs = rollout_state(dep) if dep is not None else None
    status.replicas = rs.replicas if rs else 0
    status.ready_replicas = rs.ready if rs else 0

    strategy_note = ""
    if md.spec.rollout.strategy == "Canary":
        strategy_note = " (strategy Canary: analysis-driven canary steps are not active in this version; " \
                        "the new revision is rolled out as a rolling update)"

    degraded_reason, degraded_msg = "", ""
    if blocked:
        degraded_reason, degraded_msg = "InvalidReference", "; ".join(observed.problems)
    elif rs and rs.deadline_exceeded:
        degraded_reason = "ProgressDeadlineExceeded"
        degraded_msg = (f"revision {target.hash} ({target.image}) made no progress for "
                        f"{md.spec.progress_deadline_seconds}s: {rs.ready}/{rs.desired} pods ready; "
                        "check the image and the pods' events")

    available = bool(rs and (rs.available >= 1 or rs.desired == 0))
    rolled_out = bool(rs and template_current and rs.rolled_out)
    conds = set_condition(conds, Condition(
        type="Available", status="True" if available else "False",
        reason="MinimumReplicasAvailable" if available else "NoReadyReplicas",
        message=f"{rs.available if rs else 0} of {rs.desired if rs else md.spec.desired_replicas} replicas "
                "available", observed_generation=gen), now)
    progressing = not rolled_out and not degraded_reason
    conds = set_condition(conds, Condition(
        type="Progressing", status="True" if progressing else "False",
        reason="RollingUpdate" if progressing else ("RolloutFailed" if degraded_reason else "RolloutComplete"),
        message=(f"rolling out {target.hash} ({target.image}): {rs.updated if rs else 0} updated, "
                 f"{rs.ready if rs else 0} ready of {rs.desired if rs else md.spec.desired_replicas}"
                 if progressing else f"revision {target.hash} is rolled out") + strategy_note,
        observed_generation=gen), now)
    conds = set_condition(conds, Condition(
        type="Degraded", status="True" if degraded_reason else "False",
        reason=degraded_reason or "AsExpected", message=degraded_msg, observed_generation=gen), now)
    ready = rolled_out and not degraded_reason
    conds = set_condition(conds, Condition(
        type="Ready", status="True" if ready else "False",
        reason="Ready" if ready else (degraded_reason or "RolloutInProgress"),
        message=f"{rs.ready if rs else 0}/{rs.desired if rs else 0} pods ready, revision {target.hash}",
        observed_generation=gen), now)
    status.conditions = conds

    if rolled_out and (old.stable is None or old.stable.hash != target.hash):
        if old.stable is not None:
            status.history = [HistoryEntry(revision=old.stable, result="Superseded",
                                           reason=f"replaced by {target.hash}", time=now), *status.history]
            status.history = status.history[: md.spec.revision_history_limit]
        status.stable = target
        events.append(Event("Normal", "RolloutComplete",
                            f"revision {target.hash} ({target.image}) is serving on all replicas"))

    if degraded_reason:
        phase, message = Phase.DEGRADED, degraded_msg
    elif md.spec.paused:
        phase, message = Phase.PAUSED, "paused by spec.paused"
    elif ready:
        phase, message = Phase.HEALTHY, f"serving {target.hash} ({target.image})"
    elif old.stable is None and not available:
        phase, message = Phase.PENDING, "waiting for the first pods to become ready"
    else:
        phase, message = Phase.PROGRESSING, f"rolling out {target.hash} ({target.image})"
    if phase != old.phase:
        events.append(Event("Warning" if phase == Phase.DEGRADED else "Normal", f"Phase{phase.value}",
                            f"{old.phase.value} -> {phase.value}: {message}"))
    status.phase, status.message = phase, message
    return Plan(actions, status, events)


def status_changed(old: ModelDeploymentStatus, new: ModelDeploymentStatus) -> bool:
    return old.model_dump(by_alias=True, mode="json") != new.model_dump(by_alias=True, mode="json")


def describe_action(a: Action, observed_absent: bool) -> str:
    verb = "created" if (a.verb == "apply" and observed_absent) else ("updated" if a.verb == "apply" else
                                                                      "deleted")
    return f"{a.kind} {a.name} {verb}"
