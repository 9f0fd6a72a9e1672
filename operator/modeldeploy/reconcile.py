"""The reconcile decision, as a pure function: (spec, observed, analysis, now) -> (actions, status, events).

Data flows one way: the I/O layer (`modeldeploy.controller`) gathers what is in the cluster into
`Observed`, calls `plan`, executes the returned actions through `modeldeploy.k8s`, and writes
the returned status only when it differs. Nothing here talks to the API server, so every
branch is unit-tested with plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from modeldeploy import KIND
from modeldeploy.api import (
    Condition,
    HistoryEntry,
    ModelCard,
    ModelDeployment,
    ModelDeploymentStatus,
    Phase,
)
from modeldeploy.diff import is_subset
from modeldeploy.resources.common import (
    FIELD_MANAGER,
    LABEL_NAME,
    LABEL_REVISION,
    LABEL_TRACK,
    controlled_by,
    deployment_name,
    owner_of,
)
from modeldeploy.resources.deployment import build_deployment
from modeldeploy.resources.hpa import build_hpa
from modeldeploy.resources.pdb import build_pdb
from modeldeploy.resources.service import build_service
from modeldeploy.rollout.analysis import AnalysisResult
from modeldeploy.rollout.engine import Decision, View, fmt_time, next_step, parse_time, revision_of
from modeldeploy.routers import (
    MAX_SUGGESTED_REPLICAS,
    STEP_TOLERANCE_POINTS,
    TrafficRouter,
    replicas_for_steps,
    router_for,
    step_shares,
)

Obj = dict[str, Any]

# A missing reference (InvalidReference) is looked up again after a tenth of the time it has been
# missing, within these bounds (seconds): a Secret created a minute late is seen within ~6 s, one
# missing for an hour costs a GET every 5 min. See controller/observe.py for why not a watch.
REFERENCE_RECHECK_MIN_SECONDS = 2.0
REFERENCE_RECHECK_MAX_SECONDS = 300.0


@dataclass
class Observed:
    """What the cluster holds for one ModelDeployment (None = absent)."""

    stable: Obj | None = None
    canary: Obj | None = None
    service: Obj | None = None
    hpa: Obj | None = None
    pdb: Obj | None = None
    # Routing objects of the current router, keyed by (kind, name); None = absent.
    routing: dict[tuple[str, str], Obj | None] = field(default_factory=dict)
    # Semantic problems found by looking things up (e.g. a referenced Secret that is missing).
    problems: list[str] = field(default_factory=list)
    # When the canary was last measured within its step (the controller's memory; None after a restart).
    last_probe_at: datetime | None = None
    # The API server's refusal of our last write of a child (4xx/5xx, e.g. a ResourceQuota or an admission
    # webhook saying no), as status.message shows it; None once a pass wrote its children without one.
    # The controller's memory, seeded after a restart from the status (`previous_apply_error`).
    apply_error: str | None = None
    # Model cards read from the revisions' ready pods (GET /metadata), by revision hash: only those of
    # revisions whose card status does not hold yet (controller/cards.py).
    cards: dict[str, ModelCard] = field(default_factory=dict)


@dataclass
class Action:
    # scale/patch: a merge patch; handover: an apply by the handover field manager (see plan)
    verb: Literal["apply", "delete", "scale", "patch", "handover"]
    kind: str
    name: str
    body: Obj | None = None
    new: bool = False  # an apply that creates the object (it was not observed)


@dataclass
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    # Says what the pass's writes did (Created, UpdatedDeployment): posted only when they all succeeded.
    of_writes: bool = False


@dataclass
class Plan:
    actions: list[Action]
    status: ModelDeploymentStatus
    events: list[Event]
    decision: Decision | None = None
    requeue_after: float | None = None
    # Objects of our names that belong to someone else (kind, name): left alone, re-read before a retry.
    conflicts: list[tuple[str, str]] = field(default_factory=list)


def _template_hash(dep: Obj | None) -> str | None:
    if not dep:
        return None
    labels = dep.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    return labels.get(LABEL_REVISION)


def _want(md: ModelDeployment, desired: Obj | None, observed: Obj | None, kind: str, name: str,
          actions: list[Action]) -> None:
    """Append the write needed to get from observed to desired, if any. An object of the name that
    this ModelDeployment does not control is never written or deleted (see `name_conflicts`)."""
    if observed is not None and not controlled_by(observed, md):
        return
    if desired is None:
        if observed is not None:
            actions.append(Action("delete", kind, name))
    elif observed is None or not is_subset(desired, observed):
        actions.append(Action("apply", kind, name, desired, new=observed is None))


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


def _condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def reference_recheck(old: ModelDeploymentStatus, now: datetime) -> float:
    """Seconds until a missing reference is looked up again: max(min, 1/10 of the time it has been
    missing, by the InvalidReference Degraded condition's lastTransitionTime), capped."""
    c = _condition(old.conditions, "Degraded")
    since = parse_time(c.last_transition_time) if c is not None and c.status == "True" \
        and c.reason == "InvalidReference" else None
    missing_for = (now - since).total_seconds() if since is not None else 0.0
    return min(REFERENCE_RECHECK_MAX_SECONDS, max(REFERENCE_RECHECK_MIN_SECONDS, missing_for / 10))


def previous_apply_error(status: ModelDeploymentStatus) -> str | None:
    """The apply error the status last reported (Degraded, ApplyFailed), if any: what a restarted
    controller assumes until a pass writes the children again, so a restart neither clears the
    condition before a retry succeeds nor repeats its Event."""
    c = _condition(status.conditions, "Degraded")
    return c.message if c is not None and c.status == "True" and c.reason == "ApplyFailed" else None


def steps_approximate(md: ModelDeployment, router: TrafficRouter, stable_replicas: int) -> str:
    """The StepsApproximate message: which canary steps whole pods cannot give within
    STEP_TOLERANCE_POINTS at the stable's current size, and what to do; empty when none."""
    steps = md.spec.rollout.canary.steps
    if md.spec.rollout.strategy != "Canary" or stable_replicas <= 0:
        return ""
    off = [s for s in step_shares(router, steps, stable_replicas) if s.approximate]
    if not off:
        return ""
    listed = ", ".join(f"{s.step}% gets {s.share}% ({s.canary} canary pod{'s' if s.canary != 1 else ''})"
                       for s in off)
    need = replicas_for_steps(router, steps)
    where = "autoscaling.minReplicas" if md.spec.autoscaling_on else "spec.replicas"
    more = f"run at least {need} stable replicas ({where})" if need else \
        f"no stable size up to {MAX_SUGGESTED_REPLICAS} replicas gives them"
    return (f"with {stable_replicas} stable replica{'s' if stable_replicas != 1 else ''}, the {router.name} router "
            f"splits traffic by whole pods and misses these canary steps by more than {STEP_TOLERANCE_POINTS} "
            f"points: {listed}; to get the steps as written, {more}, or split requests by weight with an L7 "
            "router (rollout.canary.trafficRouter.gatewayAPI or istio)")


def _steps_condition(md: ModelDeployment, old: ModelDeploymentStatus, status: ModelDeploymentStatus,
                     router: TrafficRouter, stable_replicas: int, conds: list[Condition], gen: int,
                     now_s: str, events: list[Event]) -> list[Condition]:
    """StepsApproximate: a condition while it applies (gone when it does not), a Warning Event when its
    message is new, and one when the canary enters a step whole pods cannot give."""
    msg = steps_approximate(md, router, stable_replicas)
    before = _condition(old.conditions, "StepsApproximate")
    if not msg:
        return [c for c in conds if c.type != "StepsApproximate"]
    if before is None or before.message != msg:
        events.append(Event("Warning", "StepsApproximate", msg))
    elif status.canary is not None and status.current_step > 0 and (
            status.current_step != old.current_step or old.canary is None or old.canary.hash != status.canary.hash):
        steps = md.spec.rollout.canary.steps
        share = step_shares(router, steps[status.current_step - 1:status.current_step], stable_replicas)[0]
        if share.approximate:
            events.append(Event("Warning", "StepApproximate",
                                f"canary step {status.current_step}/{len(steps)} ({share.step}%) sends "
                                f"{share.share}% of traffic to the canary ({share.canary} canary, {stable_replicas} "
                                "stable pods): see the StepsApproximate condition"))
    return set_condition(conds, Condition(type="StepsApproximate", status="True", reason="WholePods", message=msg,
                                          observed_generation=gen), now_s)


def name_conflicts(md: ModelDeployment, observed: Observed) -> list[tuple[str, str, Obj]]:
    """Objects with the names this ModelDeployment needs that it does not control: someone else's
    Service or Deployment, or a leftover of a deleted ModelDeployment of the same name. Server-side
    apply with force would silently take them over, so they block the rollout instead."""
    wanted: list[tuple[str, str, Obj | None]] = [
        ("Deployment", deployment_name(md, "stable"), observed.stable),
        ("Deployment", deployment_name(md, "canary"), observed.canary),
        ("Service", md.name, observed.service),
    ]
    if build_hpa(md) is not None:
        wanted.append(("HorizontalPodAutoscaler", md.name, observed.hpa))
    if build_pdb(md) is not None:
        wanted.append(("PodDisruptionBudget", md.name, observed.pdb))
    wanted += [(o["kind"], o["metadata"]["name"], observed.routing.get((o["kind"], o["metadata"]["name"])))
               for o in router_for(md).objects(md, 0)]
    return [(kind, name, obj) for kind, name, obj in wanted if obj is not None and not controlled_by(obj, md)]


def _applied_by_us(obj: Obj, *path: str) -> bool:
    """Does our server-side apply own the field at `path` (e.g. spec.replicas)?"""
    for entry in obj.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") != FIELD_MANAGER or entry.get("operation") != "Apply":
            continue
        fields = entry.get("fieldsV1") or {}
        for part in path:
            fields = fields.get(f"f:{part}")
            if not isinstance(fields, dict):
                break
        else:
            return True
    return False


def view_of(md: ModelDeployment, observed: Observed) -> View:
    dep = observed.canary
    ready = available = stuck = False
    if dep is not None and md.status.canary is not None and _template_hash(dep) == md.status.canary.hash:
        rs = rollout_state(dep)
        ready = rs.rolled_out and rs.desired > 0
        # Ready pods of this template only: right after a re-template the ReplicaSet of the old
        # revision may still have ready pods (updatedReplicas counts the new one's).
        available = rs.desired > 0 and rs.ready > 0 and rs.current_generation and rs.replicas == rs.updated
        # The deadline of this template's rollout: right after a re-template the status (and its
        # ProgressDeadlineExceeded) is still the previous generation's, i.e. the previous canary's.
        stuck = rs.deadline_exceeded and rs.current_generation
    blocked = bool(observed.problems or name_conflicts(md, observed))
    return View(canary_ready=ready, canary_available=available, canary_stuck=stuck, blocked=blocked,
                annotations=dict(md.metadata.get("annotations") or {}), last_probe_at=observed.last_probe_at)


def plan(md: ModelDeployment, observed: Observed, now: datetime, analysis: AnalysisResult | None = None) -> Plan:
    """Decide the writes and the new status for one ModelDeployment."""
    now_s = fmt_time(now)
    old = md.status
    actions: list[Action] = []
    events: list[Event] = []
    gen = int(md.metadata.get("generation", 1))
    router = router_for(md)

    decision = next_step(md, view_of(md, observed), analysis, now)
    status = decision.status
    stable_rev = revision_of(decision.stable_model)
    for note in decision.notes:
        events.append(Event(note.type, note.reason, note.message))

    stable_replicas = None if md.spec.autoscaling_on else md.spec.desired_replicas
    desired_stable = build_deployment(md, "stable", model=decision.stable_model, replicas=stable_replicas)
    current_stable = int((observed.stable or {}).get("spec", {}).get("replicas") or stable_replicas or 1)

    # A semantic problem (e.g. missing Secret) or a name taken by someone else must not take down
    # what is running: keep the current Deployment as it is, create nothing that would fail, and report it.
    conflicts = name_conflicts(md, observed)
    blocked = bool(observed.problems or conflicts)
    stable_name = desired_stable["metadata"]["name"]
    if not blocked and md.spec.autoscaling_on and observed.stable is not None \
            and _applied_by_us(observed.stable, "spec", "replicas"):
        # Autoscaling turned on: an apply without `replicas` would delete the field we own (the
        # default, 1, would apply until the HPA acts). A second field manager first takes a share
        # of it at the current value, then our apply lets go: the field stays until the HPA scales.
        actions.append(Action("handover", "Deployment", stable_name, {"spec": {"replicas": current_stable}}))
        actions.append(Action("apply", "Deployment", stable_name, desired_stable))
    elif not blocked:
        _want(md, desired_stable, observed.stable, "Deployment", stable_name, actions)
    _want(md, build_service(md), observed.service, "Service", md.name, actions)
    _want(md, build_hpa(md), observed.hpa, "HorizontalPodAutoscaler", md.name, actions)
    _want(md, build_pdb(md), observed.pdb, "PodDisruptionBudget", md.name, actions)

    # Routing first (on rollback the weight goes to 0 before the canary pods go), then canary pods.
    # Objects a previous router made (status.routing) and the current one does not want are deleted.
    desired_routing = {(o["kind"], o["metadata"]["name"]): o for o in router.objects(md, decision.route_weight)}
    for key in sorted(set(desired_routing) | set(observed.routing)):
        _want(md, desired_routing.get(key), observed.routing.get(key), key[0], key[1], actions)
    status.routing = sorted(f"{k}/{n}" for k, n in desired_routing)
    canary_name = deployment_name(md, "canary")
    if decision.canary_model is not None and not blocked:
        replicas = router.canary_replicas(current_stable, decision.weight)
        _want(md, build_deployment(md, "canary", model=decision.canary_model, replicas=replicas), observed.canary,
              "Deployment", canary_name, actions)
    elif observed.canary is not None and (observed.canary.get("spec", {}).get("replicas") or 0) > 0 \
            and controlled_by(observed.canary, md):
        actions.append(Action("scale", "Deployment", canary_name, {"spec": {"replicas": 0}}))

    # Weight as achieved (replicas router: ready pod ratio; L7 routers: the route's weight). Only while
    # the canary can serve (route_weight > 0: all the Deployment's pods are its revision and one is
    # ready): right after a re-template the ready pods counted are the previous canary's.
    canary_ready = int(((observed.canary or {}).get("status") or {}).get("readyReplicas") or 0)
    stable_ready = int(((observed.stable or {}).get("status") or {}).get("readyReplicas") or 0)
    status.canary_weight = router.achieved_weight(decision.route_weight, stable_ready, canary_ready) \
        if decision.canary_model is not None and not blocked and decision.route_weight > 0 else 0

    # What the writes will say: one Event for everything created in this pass, one per updated Deployment.
    created = [f"{a.kind} {a.name}" for a in actions if a.verb == "apply" and a.new]
    if created:
        events.append(Event("Normal", "Created", "created " + ", ".join(created), of_writes=True))
    for a in actions:
        if a.verb == "apply" and not a.new and a.kind == "Deployment":
            events.append(Event("Normal", "UpdatedDeployment", f"updated Deployment {a.name} to match the spec",
                                of_writes=True))
    if decision.consume:  # requests handled (applied or ignored): removed after the status is written
        actions.append(Action("patch", KIND, md.name,
                              {"metadata": {"annotations": {a: None for a in decision.consume}}}))

    status.observed_generation = gen
    status.selector = f"{LABEL_NAME}={md.name},{LABEL_TRACK}=stable"
    conds = list(status.conditions)
    dep = observed.stable
    template_current = dep is not None and _template_hash(dep) == stable_rev.hash and not any(
        a.kind == "Deployment" and a.name == md.name and a.verb == "apply" for a in actions)
    rs = rollout_state(dep) if dep is not None else None
    status.replicas = rs.replicas if rs else 0
    status.ready_replicas = rs.ready if rs else 0

    degraded_reason, degraded_msg = "", ""
    if conflicts:
        degraded_reason = "NameConflict"
        degraded_msg = "; ".join(
            f"{kind} {md.namespace}/{name} already exists and is not managed by this ModelDeployment "
            f"({owner_of(obj)}): rename the ModelDeployment, or delete or rename the {kind}"
            for kind, name, obj in conflicts)
    elif observed.problems:
        degraded_reason, degraded_msg = "InvalidReference", "; ".join(observed.problems)
    elif observed.apply_error:
        degraded_reason, degraded_msg = "ApplyFailed", observed.apply_error
    elif rs and rs.deadline_exceeded:
        degraded_reason = "ProgressDeadlineExceeded"
        degraded_msg = (f"revision {stable_rev.hash} ({stable_rev.image}) made no progress for "
                        f"{md.spec.progress_deadline_seconds}s: {rs.ready}/{rs.desired} pods ready; "
                        f"check the pods' events (kubectl describe pods -l {LABEL_NAME}={md.name}): a missing "
                        "Secret or ConfigMap shows as CreateContainerConfigError, a bad image as ErrImagePull")
    old_degraded = _condition(old.conditions, "Degraded")
    if degraded_reason in ("NameConflict", "ApplyFailed") and (  # one Event per new message, not one per retry
            old_degraded is None or old_degraded.reason != degraded_reason or old_degraded.message != degraded_msg):
        events.append(Event("Warning", degraded_reason, degraded_msg))

    available = bool(rs and (rs.available >= 1 or rs.desired == 0))
    rolled_out = bool(rs and template_current and rs.rolled_out)
    canary_active = decision.canary_model is not None
    conds = set_condition(conds, Condition(
        type="Available", status="True" if available else "False",
        reason="MinimumReplicasAvailable" if available else "NoReadyReplicas",
        message=f"{rs.available if rs else 0} of {rs.desired if rs else md.spec.desired_replicas} stable replicas "
                "available", observed_generation=gen), now_s)
    progressing = (not rolled_out or canary_active) and not degraded_reason
    if canary_active:
        prog_reason, prog_msg = "CanaryInProgress", decision.message
    elif progressing:
        prog_reason = "RollingUpdate"
        prog_msg = (f"rolling out {stable_rev.hash} ({stable_rev.image}): {rs.updated if rs else 0} updated, "
                    f"{rs.ready if rs else 0} ready of {rs.desired if rs else md.spec.desired_replicas}")
    else:
        prog_reason = "RolloutFailed" if degraded_reason else "RolloutComplete"
        prog_msg = f"revision {stable_rev.hash} is rolled out"
    conds = set_condition(conds, Condition(type="Progressing", status="True" if progressing else "False",
                                           reason=prog_reason, message=prog_msg, observed_generation=gen), now_s)
    conds = set_condition(conds, Condition(
        type="Degraded", status="True" if degraded_reason else "False",
        reason=degraded_reason or "AsExpected", message=degraded_msg, observed_generation=gen), now_s)
    # Ready means clients can reach it: the Service must exist on the server too (its create may still
    # be in flight, cached as desired, with no uid yet; see controller/executor.py).
    service_served = bool(observed.service and observed.service.get("metadata", {}).get("uid"))
    ready = rolled_out and not degraded_reason and service_served
    conds = set_condition(conds, Condition(
        type="Ready", status="True" if ready else "False",
        reason="Ready" if ready else (degraded_reason or "RolloutInProgress"),
        message=f"{rs.ready if rs else 0}/{rs.desired if rs else 0} stable pods ready, revision {stable_rev.hash}",
        observed_generation=gen), now_s)
    # Under an HPA the stable never stays below minReplicas (a first pass sees no Deployment yet: 1).
    sized = max(current_stable, md.spec.autoscaling.min_replicas) if md.spec.autoscaling_on and md.spec.autoscaling \
        else current_stable
    status.conditions = _steps_condition(md, old, status, router, sized, conds, gen, now_s, events)

    if rolled_out and (status.stable is None or status.stable.hash != stable_rev.hash):
        prev = status.stable
        recorded = any(h.revision.hash == prev.hash and h.result == "Superseded" for h in status.history[:1]) \
            if prev is not None else True
        if prev is not None and not recorded:
            status.history = [HistoryEntry(revision=prev, result="Superseded", reason=f"replaced by {stable_rev.hash}",
                                           time=now_s), *status.history][: md.spec.revision_history_limit]
        status.stable = stable_rev
        status.stable_model = decision.stable_model
        if prev is not None:  # the first rollout is announced by the Pending -> Healthy phase Event
            events.append(Event("Normal", "RolloutComplete",
                                f"revision {stable_rev.hash} ({stable_rev.image}) is serving on all stable replicas"))

    _attach_cards(old, status, observed.cards)

    if degraded_reason:
        phase, message = Phase.DEGRADED, degraded_msg
    elif decision.phase is not None:
        phase, message = decision.phase, decision.message
    elif md.spec.paused:
        phase, message = Phase.PAUSED, "paused by spec.paused"
    elif ready:
        phase, message = Phase.HEALTHY, f"serving {stable_rev.hash} ({stable_rev.image})"
    elif old.stable is None and not available:
        phase, message = Phase.PENDING, "waiting for the first pods to become ready"
    else:
        phase, message = Phase.PROGRESSING, f"rolling out {stable_rev.hash} ({stable_rev.image})"
    if phase != old.phase:
        events.append(Event("Warning" if phase in (Phase.DEGRADED, Phase.ROLLED_BACK, Phase.FAILED) else "Normal",
                            f"Phase{phase.value}", f"{old.phase.value} -> {phase.value}: {message}"))
    status.phase, status.message = phase, message
    requeue = None if decision.analysis_due_in is None else max(0.2, decision.analysis_due_in)
    if degraded_reason == "InvalidReference":
        recheck = reference_recheck(old, now)
        requeue = recheck if requeue is None else min(requeue, recheck)
    return Plan(actions, status, events, decision=decision, requeue_after=requeue,
                conflicts=[(kind, name) for kind, name, _ in conflicts])


def _attach_cards(old: ModelDeploymentStatus, status: ModelDeploymentStatus, observed: dict[str, ModelCard]) -> None:
    """Each current revision keeps the card status already holds for its hash (so a promoted canary's card
    becomes the stable's), else takes the one just observed. History entries carry none: status stays
    small, and a revision that comes back (fast rollback) has its card read again from its pods."""
    known = {**observed, **{r.hash: r.card for r in (old.stable, old.canary) if r is not None and r.card is not None}}
    for attr in ("stable", "canary"):
        rev = getattr(status, attr)
        if rev is not None and rev.card is None and rev.hash in known:
            setattr(status, attr, rev.model_copy(update={"card": known[rev.hash]}))
    if any(h.revision.card is not None for h in status.history):
        status.history = [h.model_copy(update={"revision": h.revision.model_copy(update={"card": None})})
                          if h.revision.card is not None else h for h in status.history]


def status_changed(old: ModelDeploymentStatus, new: ModelDeploymentStatus) -> bool:
    return old.model_dump(by_alias=True, mode="json") != new.model_dump(by_alias=True, mode="json")
