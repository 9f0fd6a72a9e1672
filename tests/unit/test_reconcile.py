"""The reconcile planner: which writes, which status, which events — for every situation."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from modeldeploy.api import ModelDeployment, Phase
from modeldeploy.reconcile import Observed, plan
from modeldeploy.resources.deployment import build_deployment
from modeldeploy.resources.hpa import build_hpa
from modeldeploy.resources.pdb import build_pdb
from modeldeploy.resources.service import build_service
from tests.unit.helpers import md

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
    # Pending is the initial phase: nothing to announce but what was created (one Event for all).
    assert [e.reason for e in p.events] == ["Created"]


def test_steady_state_writes_nothing_and_is_idempotent() -> None:
    m = md(replicas=2)
    p = plan(m, steady(m, 2), NOW)
    assert p.actions == []
    assert p.status.phase == Phase.HEALTHY
    assert p.status.stable is not None and p.status.stable.image == "registry.example/room-price:2f1c"
    assert {c.type: c.status for c in p.status.conditions} == {
        "Ready": "True", "Available": "True", "Progressing": "False", "Degraded": "False"}
    assert (p.status.replicas, p.status.ready_replicas) == (2, 2)
    assert [e.reason for e in p.events] == ["PhaseHealthy"]  # the first rollout: one Event says it
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
