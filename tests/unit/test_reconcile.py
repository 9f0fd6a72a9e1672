"""The reconcile planner: which writes, which status, which events — for every situation."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from modeldeploy.api import ModelDeployment, Phase, TrafficRouter
from modeldeploy.reconcile import (
    REFERENCE_RECHECK_MAX_SECONDS,
    REFERENCE_RECHECK_MIN_SECONDS,
    Observed,
    plan,
    previous_apply_error,
    reference_recheck,
)
from modeldeploy.resources.deployment import build_deployment
from modeldeploy.resources.hpa import build_hpa
from modeldeploy.resources.pdb import build_pdb
from modeldeploy.resources.service import build_service
from tests.unit.helpers import V2, World, md

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
LATER = datetime(2026, 11, 26, 12, 5, 0, tzinfo=UTC)


def served(obj: dict[str, Any] | None, **status: Any) -> dict[str, Any] | None:
    """What the API server would return for `obj`: defaults added, generation, status."""
    if obj is None:
        return None
    out = copy.deepcopy(obj)
    out["metadata"].update(generation=1, uid="u-" + out["metadata"]["name"], resourceVersion="1")
    out.setdefault("spec", {}).setdefault("replicas", 1) if out["kind"] == "Deployment" else None
    if out["kind"] == "Service":
        out["spec"]["clusterIP"] = "10.96.0.42"
        out["spec"]["ports"][0]["protocol"] = "TCP"
    out["status"] = status
    return out


def rolled_out(dep: dict[str, Any], n: int) -> dict[str, Any]:
    out = served(dep, observedGeneration=1, replicas=n, updatedReplicas=n, readyReplicas=n, availableReplicas=n,
                 conditions=[{"type": "Available", "status": "True"},
                             {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}])
    assert out is not None
    out["spec"]["replicas"] = n
    return out


def steady(m: ModelDeployment, n: int = 1) -> Observed:
    return Observed(stable=rolled_out(build_deployment(m, "stable", replicas=n), n), service=served(build_service(m)),
                    hpa=served(build_hpa(m)), pdb=served(build_pdb(m)))


def kinds(p: Any) -> list[tuple[str, str]]:
    return [(a.verb, a.kind) for a in p.actions]


def test_new_object_creates_deployment_and_service_and_is_pending() -> None:
    p = plan(md(), Observed(), NOW)
    assert kinds(p) == [("apply", "Deployment"), ("apply", "Service")]
    assert p.status.phase == Phase.PENDING
    assert p.status.observed_generation == 1
    assert p.status.selector == "modeldeploy.io/name=room-price,modeldeploy.io/track=stable"
    cond = {c.type: c for c in p.status.conditions}
    assert cond["Ready"].status == "False" and cond["Progressing"].status == "True"
    # Pending is the initial phase: nothing to announce but what was created (one Event for all), and that
    # the default steps (10, 25, 50) get 50 % each with 1 stable replica (see the StepsApproximate tests).
    assert [e.reason for e in p.events] == ["Created", "StepsApproximate"]


def test_steady_state_writes_nothing_and_is_idempotent() -> None:
    m = md(replicas=2)
    p = plan(m, steady(m, 2), NOW)
    assert p.actions == []
    assert p.status.phase == Phase.HEALTHY
    assert p.status.stable is not None and p.status.stable.image == "registry.example/room-price:2f1c"
    assert {c.type: c.status for c in p.status.conditions} == {
        "Ready": "True", "Available": "True", "Progressing": "False", "Degraded": "False",
        "StepsApproximate": "True"}  # 2 stable replicas: 10 % and 25 % steps get 33 %
    assert (p.status.replicas, p.status.ready_replicas) == (2, 2)
    # The first rollout: one Event says it (and one that the steps are approximate).
    assert [e.reason for e in p.events] == ["StepsApproximate", "PhaseHealthy"]
    # Feed the status back: a second pass (later) changes nothing at all, not even timestamps.
    m2 = m.model_copy(update={"status": p.status})
    p2 = plan(m2, steady(m2, 2), LATER)
    assert p2.actions == [] and p2.events == []
    assert p2.status.model_dump() == p.status.model_dump()


def test_edited_or_deleted_children_are_restored() -> None:
    m = md(replicas=2)
    obs = steady(m, 2)
    assert obs.stable is not None and obs.service is not None
    obs.stable["spec"]["template"]["spec"]["containers"][0]["image"] = "evil/image:1"
    obs.service = None
    p = plan(m, obs, NOW)
    assert kinds(p) == [("apply", "Deployment"), ("apply", "Service")]


def test_image_change_rolls_the_stable_deployment() -> None:
    old = md(replicas=2, rollout={"strategy": "Rolling"})
    first = plan(old, steady(old, 2), NOW)
    new = md(replicas=2, rollout={"strategy": "Rolling"},
             model={"image": "registry.example/room-price:3e2d", "bento": "room_price:3e2d"})
    new = new.model_copy(update={"status": first.status})
    p = plan(new, steady(old, 2), LATER)
    assert kinds(p) == [("apply", "Deployment")]
    body = p.actions[0].body
    assert body is not None
    assert body["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/room-price:3e2d"
    assert p.status.phase == Phase.PROGRESSING
    assert p.status.stable is not None and p.status.stable.image.endswith(":2f1c")  # until the new one is out
    # Once the Deployment has rolled out the new template, stable moves and history records the old one.
    done = plan(new.model_copy(update={"status": p.status}), steady(new, 2), LATER)
    assert done.status.phase == Phase.HEALTHY
    assert done.status.stable is not None and done.status.stable.image.endswith(":3e2d")
    assert done.status.history[0].revision.image.endswith(":2f1c")
    assert done.status.history[0].result == "Superseded"


def test_missing_secret_degrades_without_touching_the_running_deployment() -> None:
    ref = {"secretKeyRef": {"name": "t", "key": "k"}}
    m = md(model={"image": "r/x:2", "env": [{"name": "TOKEN", "valueFrom": ref}]})
    running = steady(md(), 1)
    running.problems = ["Secret 't' (spec.model.env TOKEN) does not exist in namespace 'ml'"]
    p = plan(m, running, NOW)
    assert ("apply", "Deployment") not in kinds(p)
    assert p.status.phase == Phase.DEGRADED
    cond = {c.type: c for c in p.status.conditions}
    assert cond["Degraded"].status == "True" and cond["Degraded"].reason == "InvalidReference"
    assert "Secret 't'" in p.status.message
    assert [e.type for e in p.events if e.reason == "PhaseDegraded"] == ["Warning"]


def test_progress_deadline_exceeded_is_degraded() -> None:
    m = md()
    dep = served(build_deployment(m, "stable", replicas=1), observedGeneration=1, replicas=1, updatedReplicas=1,
                 readyReplicas=0, availableReplicas=0,
                 conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}])
    p = plan(m, Observed(stable=dep, service=served(build_service(m))), NOW)
    assert p.actions == []
    assert p.status.phase == Phase.DEGRADED
    assert "made no progress for 600s" in p.status.message


def test_autoscaling_adds_hpa_and_pdb_and_never_sets_replicas() -> None:
    m = md(autoscaling={"minReplicas": 2, "maxReplicas": 5})
    p = plan(m, Observed(), NOW)
    assert kinds(p) == [("apply", "Deployment"), ("apply", "Service"), ("apply", "HorizontalPodAutoscaler"),
                        ("apply", "PodDisruptionBudget")]
    dep = p.actions[0].body
    assert dep is not None and "replicas" not in dep["spec"]
    # The HPA scaled the Deployment to 4: that is not drift.
    obs = steady(m, 4)
    assert plan(m, obs, NOW).actions == []


def test_turning_autoscaling_off_deletes_the_hpa() -> None:
    on = md(autoscaling={"minReplicas": 1, "maxReplicas": 5})
    obs = steady(on, 1)
    off = md(replicas=1)
    assert ("delete", "HorizontalPodAutoscaler") in kinds(plan(off, obs, NOW))


def test_paused_phase() -> None:
    m = md(paused=True)
    assert plan(m, steady(m), NOW).status.phase == Phase.PAUSED


# -- issue 11: names taken by someone else, replicas handed to the HPA ----------------------------------

def foreign(obj: dict[str, Any] | None, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """`obj` as someone else made it: no owner reference of ours (another owner, or none)."""
    out = served(obj)
    assert out is not None
    out["metadata"]["ownerReferences"] = [owner] if owner else []
    out["metadata"]["managedFields"] = [{"manager": "kubectl-create", "operation": "Update"}]
    return out


def test_someone_elses_service_of_the_same_name_is_left_alone_and_reported() -> None:
    m = md()
    theirs = foreign(build_service(m))
    p = plan(m, Observed(service=theirs), NOW)
    assert ("apply", "Service") not in kinds(p) and ("apply", "Deployment") not in kinds(p)
    assert p.status.phase == Phase.DEGRADED
    assert p.conflicts == [("Service", "room-price")]
    cond = {c.type: c for c in p.status.conditions}["Degraded"]
    assert cond.reason == "NameConflict"
    assert "Service ml/room-price already exists" in cond.message and "kubectl-create" in cond.message
    assert [e.reason for e in p.events if e.type == "Warning"] == ["NameConflict", "StepsApproximate",
                                                                    "PhaseDegraded"]
    # The next pass over the same world says nothing new: no Event storm while it lasts.
    again = plan(md_with_status(m, p), Observed(service=theirs), LATER)
    assert again.events == [] and again.status.phase == Phase.DEGRADED


def md_with_status(m: ModelDeployment, p: Any) -> ModelDeployment:
    body = m.model_dump(by_alias=True, mode="json")
    body["status"] = p.status.model_dump(by_alias=True, mode="json")
    return ModelDeployment.model_validate(body)


def test_leftovers_of_a_deleted_modeldeployment_of_the_same_name_are_not_taken_over() -> None:
    m = md()
    old_owner = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "room-price",
                 "uid": "0c1e7d4e-0000-4000-8000-0000000000ff", "controller": True}
    p = plan(m, Observed(stable=foreign(build_deployment(m, "stable", replicas=1), old_owner)), NOW)
    assert all(a.kind != "Deployment" for a in p.actions)
    msg = {c.type: c for c in p.status.conditions}["Degraded"].message
    assert "owned by ModelDeployment 'room-price' (uid 0c1e7d4e-0000-4000-8000-0000000000ff" in msg


def test_a_foreign_canary_deployment_is_neither_scaled_nor_deleted() -> None:
    m = md()
    obs = steady(m)
    obs.canary = foreign(build_deployment(m, "canary", replicas=3),
                         {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "uid": "u", "controller": True})
    p = plan(m, obs, NOW)
    assert all(a.name != "room-price-canary" for a in p.actions)
    assert p.status.phase == Phase.DEGRADED and p.conflicts == [("Deployment", "room-price-canary")]


def applied_replicas(dep: dict[str, Any]) -> dict[str, Any]:
    dep["metadata"]["managedFields"] = [{"manager": "modeldeploy", "operation": "Apply",
                                         "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}}]
    return dep


def test_turning_autoscaling_on_hands_replicas_over_without_dropping_them() -> None:
    off = md(replicas=6)
    obs = steady(off, 6)
    obs.stable = applied_replicas(obs.stable or {})
    on = md(autoscaling={"minReplicas": 2, "maxReplicas": 10})  # replicas go with it (refused together)
    p = plan(on, obs, NOW)
    verbs = [(a.verb, a.kind, a.name) for a in p.actions if a.kind == "Deployment"]
    # First a second field manager holds replicas at 6, then our apply (without replicas) lets go of it.
    assert verbs == [("handover", "Deployment", "room-price"), ("apply", "Deployment", "room-price")]
    assert p.actions[0].body == {"spec": {"replicas": 6}}
    assert "replicas" not in (p.actions[1].body or {})["spec"]
    # Once we no longer own the field there is nothing more to hand over.
    obs.stable["metadata"]["managedFields"] = [{"manager": "modeldeploy", "operation": "Apply",
                                                "fieldsV1": {"f:spec": {"f:template": {}}}}]
    assert all(a.verb != "handover" for a in plan(on, obs, LATER).actions)


def test_not_ready_while_the_service_create_is_still_in_flight() -> None:
    """The executor caches a new Service as desired before the server has it (no uid yet): not Ready until it does."""
    m = md()
    obs = steady(m)
    assert plan(m, obs, NOW).status.phase == Phase.HEALTHY
    obs.service = build_service(m)  # the desired body, as cached while its create runs
    p = plan(m, obs, NOW)
    assert p.status.phase != Phase.HEALTHY
    assert {c.type: c.status for c in p.status.conditions}["Ready"] == "False"
    assert ("apply", "Service") not in kinds(p)  # and it is not created twice


# -- what admission cannot know: a child write the API server refuses ----------------------------
QUOTA = ('create Deployment ml/room-price: 403 Forbidden: deployments.apps "room-price" is forbidden: exceeded '
         'quota: no-deployments, requested: count/deployments.apps=1, used: count/deployments.apps=0, limited: '
         'count/deployments.apps=0')


def test_a_refused_child_write_is_degraded_with_the_servers_message_and_one_event() -> None:
    m = md(rollout={"strategy": "Rolling"})
    p = plan(m, Observed(apply_error=QUOTA), NOW)
    assert ("apply", "Deployment") in kinds(p)  # still tried again (the controller backs off between passes)
    assert p.status.phase == Phase.DEGRADED and p.status.message == QUOTA
    cond = {c.type: c for c in p.status.conditions}
    assert (cond["Degraded"].status, cond["Degraded"].reason, cond["Degraded"].message) == ("True", "ApplyFailed",
                                                                                             QUOTA)
    assert cond["Ready"].status == "False"
    assert [(e.reason, e.message) for e in p.events if e.reason == "ApplyFailed"] == [("ApplyFailed", QUOTA)]
    # Each retry refused the same way says nothing new; a different refusal gets its own Event.
    again = plan(md_with_status(m, p), Observed(apply_error=QUOTA), LATER)
    assert again.status.phase == Phase.DEGRADED and [e for e in again.events if not e.of_writes] == []
    other = plan(md_with_status(m, p), Observed(apply_error="create Deployment ml/room-price: 500 boom"), LATER)
    assert [e.reason for e in other.events if not e.of_writes] == ["ApplyFailed"]


def test_once_the_writes_succeed_the_degraded_condition_clears() -> None:
    m = md(rollout={"strategy": "Rolling"}, replicas=2)
    failing = plan(m, Observed(apply_error=QUOTA), NOW)
    p = plan(md_with_status(m, failing), steady(m, 2), LATER)
    cond = {c.type: c for c in p.status.conditions}
    assert cond["Degraded"].status == "False" and p.status.phase == Phase.HEALTHY
    assert not [e for e in p.events if e.type == "Warning"]


def test_a_restarted_controller_keeps_the_reported_apply_error_until_a_pass_succeeds() -> None:
    m = md(rollout={"strategy": "Rolling"})
    assert previous_apply_error(m.status) is None
    p = plan(m, Observed(apply_error=QUOTA), NOW)
    assert previous_apply_error(md_with_status(m, p).status) == QUOTA
    healthy = plan(m, steady(m), NOW)
    assert previous_apply_error(md_with_status(m, healthy).status) is None


def test_created_events_are_only_for_writes_that_happen() -> None:
    p = plan(md(rollout={"strategy": "Rolling"}), Observed(apply_error=QUOTA), NOW)
    assert [e.of_writes for e in p.events if e.reason == "Created"] == [True]
    assert not any(e.of_writes for e in p.events if e.reason != "Created")


# -- a missing reference is looked up again soon, then less often ---------------------------------
def test_a_missing_reference_is_rechecked_after_a_tenth_of_the_time_it_has_been_missing() -> None:
    m = md(rollout={"strategy": "Rolling"})
    problem = Observed(problems=["ServiceAccount 'sa' (spec.model.serviceAccountName) does not exist"])
    first = plan(m, problem, NOW)
    assert first.status.phase == Phase.DEGRADED and first.requeue_after == REFERENCE_RECHECK_MIN_SECONDS
    since = md_with_status(m, first)
    assert reference_recheck(since.status, NOW + timedelta(seconds=10)) == REFERENCE_RECHECK_MIN_SECONDS
    assert plan(since, problem, NOW + timedelta(seconds=60)).requeue_after == 6.0
    assert reference_recheck(since.status, NOW + timedelta(hours=5)) == REFERENCE_RECHECK_MAX_SECONDS
    assert plan(m, steady(m), NOW).requeue_after is None  # nothing missing: no re-check


# -- honest steps ------------------------------------------------------------------------------------
def conds(p: Any) -> dict[str, Any]:
    return {c.type: c for c in p.status.conditions}


def test_steps_whole_pods_cannot_give_are_a_condition_and_a_warning_at_apply() -> None:
    m = md(replicas=1)  # the default steps 10, 25, 50
    p = plan(m, steady(m), NOW)
    c = conds(p)["StepsApproximate"]
    assert (c.status, c.reason) == ("True", "WholePods")
    assert "with 1 stable replica" in c.message and "10% gets 50% (1 canary pod), 25% gets 50% (1 canary pod)" \
        in c.message and "50% gets" not in c.message
    assert "run at least 6 stable replicas (spec.replicas)" in c.message and "gatewayAPI or istio" in c.message
    assert [e.message for e in p.events if e.reason == "StepsApproximate"] == [c.message]
    assert [e.type for e in p.events if e.reason == "StepsApproximate"] == ["Warning"]
    again = plan(md_with_status(m, p), steady(m), LATER)  # no news: no Event again
    assert "StepsApproximate" in conds(again) and not [e for e in again.events if e.reason == "StepsApproximate"]


def test_the_steps_condition_goes_away_when_it_no_longer_applies() -> None:
    m = md(replicas=1)
    p = plan(m, steady(m), NOW)
    assert "StepsApproximate" in conds(p)
    bigger = md_with_status(m, p).model_copy(deep=True)
    bigger.spec.replicas = 6
    assert "StepsApproximate" not in conds(plan(bigger, steady(bigger, 6), LATER))
    l7 = md_with_status(m, p).model_copy(deep=True)
    l7.spec.rollout.canary.traffic_router = TrafficRouter(gateway_api={"parentRefs": [{"name": "gw"}]})
    assert "StepsApproximate" not in conds(plan(l7, steady(l7), LATER))
    rolling = md(replicas=1, rollout={"strategy": "Rolling"})
    assert "StepsApproximate" not in conds(plan(rolling, steady(rolling), NOW))


def test_autoscaled_steps_name_min_replicas_and_follow_the_current_size() -> None:
    m = md(autoscaling={"minReplicas": 2, "maxReplicas": 10})
    msg = conds(plan(m, steady(m, 2), NOW))["StepsApproximate"].message
    assert "with 2 stable replicas" in msg and "(autoscaling.minReplicas)" in msg and "10% gets 33%" in msg
    # Before the Deployment exists: the HPA's minimum, not the Deployment's default of 1 (no second Event later).
    assert conds(plan(m, Observed(), NOW))["StepsApproximate"].message == msg
    assert "with 3 stable replicas" in conds(plan(m, steady(m, 3), NOW))["StepsApproximate"].message


def test_each_step_the_canary_enters_that_whole_pods_miss_is_a_warning() -> None:
    w = World(replicas=1)  # steps 10, 50: with 1 stable, 10 % gets 50 %
    w.settle()
    assert "StepsApproximate" in {c["type"] for c in w.status["conditions"]}
    w.set_model(V2)
    p = w.step()
    assert w.status["currentStep"] == 1
    assert [e.message for e in p.events if e.reason == "StepApproximate"] == [
        "canary step 1/2 (10%) sends 50% of traffic to the canary (1 canary, 1 stable pods): see the "
        "StepsApproximate condition"]
    assert not [e for e in w.step().events if e.reason == "StepApproximate"]  # same step: said once
