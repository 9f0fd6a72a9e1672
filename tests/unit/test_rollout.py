"""The canary state machine, driven through `reconcile.plan` against a simulated cluster.

`World` applies the planned writes to in-memory objects and lets Deployments "roll out"
instantly (as kwok does), so each test reads as a rollout story: steps, analysis verdicts,
promotion, rollback, restarts.
"""

from __future__ import annotations

import copy
import math
from datetime import timedelta
from typing import Any

import pytest

from modeldeploy.api import Analysis, MetricCheck, ModelDeployment, Phase
from modeldeploy.metrics import queries
from modeldeploy.reconcile import Observed, plan, view_of
from modeldeploy.rollout.analysis import AnalysisResult, Measurement, analyse, probe, wilson_lower
from modeldeploy.rollout.engine import (
    ANNOTATION_ABORT,
    ANNOTATION_PROMOTE,
    analysis_due_in,
    measurement_due,
    revision_of,
)
from modeldeploy.routers.gatewayapi import GatewayAPIRouter
from modeldeploy.routers.replicas import ReplicasRouter
from tests.unit.helpers import BASE, CANARY, PROM, V1, V2, V3, World, validate


def passed() -> AnalysisResult:
    return AnalysisResult("Pass", [], "all checks passed")


def failed(value: float = 0.2) -> AnalysisResult:
    check = MetricCheck(name="error-rate", max=0.01)
    return analyse(Analysis(min_requests=0), None, [Measurement(check, value)], "t")


def test_first_deploy_has_no_canary() -> None:
    w = World()
    p = w.settle()
    assert w.canary() is None
    assert w.status["phase"] == "Healthy" and w.status["stable"]["image"].endswith(":v1")
    assert w.status["stableModel"]["image"].endswith(":v1")
    assert p.requeue_after is None


def test_healthy_canary_walks_the_steps_and_is_promoted() -> None:
    w = World(replicas=4)
    w.settle()
    w.set_model(V2)
    p = w.step()
    assert w.status["phase"] == "Progressing" and w.status["canary"]["image"].endswith(":v2")
    assert w.status["currentStep"] == 1
    assert any(e.reason == "CanaryStarted" for e in p.events)
    canary = w.canary()
    assert canary is not None and canary["spec"]["replicas"] == 1  # 4 * 10/90 -> 0.44 -> at least 1
    validate(canary)
    assert w.stable_image().endswith(":v1")
    p = w.step()  # pods ready now: weight achieved = 1 / (4 + 1); the step's window starts
    assert w.status["canaryWeight"] == 20
    assert p.requeue_after == pytest.approx(5)  # the first in-step measurement (measurementInterval 5s)

    # Analysis before the interval elapsed is not due: the controller passes none, nothing moves.
    w.step(advance=5)
    assert w.status["currentStep"] == 1
    p = w.step(passed(), advance=5)
    assert w.status["currentStep"] == 2 and any(e.reason == "StepAdvanced" for e in p.events)
    w.step()
    assert w.canary()["spec"]["replicas"] == 4  # type: ignore[index]  # 50%: as many as stable
    assert w.status["canaryWeight"] == 50
    p = w.step(passed(), advance=10)
    assert any(e.reason == "Promoted" for e in p.events) and p.decision and p.decision.promoted
    assert w.canary()["spec"]["replicas"] == 0  # type: ignore[index]
    assert w.stable_image().endswith(":v2")
    w.settle()
    assert w.status["phase"] == "Healthy"
    assert w.status["stable"]["image"].endswith(":v2") and w.status["canary"] is None
    assert w.status["canaryWeight"] == 0
    assert w.status["history"][0]["revision"]["image"].endswith(":v1")
    assert w.status["history"][0]["result"] == "Superseded"


def test_failing_canary_is_rolled_back_at_once_and_not_retried() -> None:
    w = World()
    w.start_canary()
    p = w.step(failed(0.2), advance=10)
    assert p.decision and p.decision.rolled_back
    assert w.status["phase"] == "RolledBack"
    assert "error-rate = 0.2, want <= 0.01" in w.status["message"]
    assert w.status["canaryWeight"] == 0 and w.canary()["spec"]["replicas"] == 0  # type: ignore[index]
    assert w.stable_image().endswith(":v1")
    warning = [e for e in p.events if e.type == "Warning" and e.reason == "RolledBack"]
    assert warning and "error-rate = 0.2" in warning[0].message
    assert w.status["failedRevisions"] == [w.status["history"][0]["revision"]["hash"]]
    assert w.status["history"][0]["result"] == "RolledBack"
    # The same revision stays rolled back: no new canary on later reconciles.
    for _ in range(3):
        w.step(advance=30)
        assert w.canary()["spec"]["replicas"] == 0  # type: ignore[index]
        assert w.status["phase"] == "RolledBack"
    # A different spec is a new canary.
    w.set_model(V3)
    w.step()
    assert w.status["canary"]["image"].endswith(":v3") and w.canary()["spec"]["replicas"] == 1  # type: ignore[index]


def test_failure_limit_tolerates_some_failures() -> None:
    w = World(rollout={"canary": dict(CANARY), "analysis": {"prometheus": PROM, "failureLimit": 2,
                                                            "metrics": [{"name": "error-rate", "max": 0.01}]}})
    w.start_canary()
    p = w.step(failed(), advance=10)
    assert w.status["phase"] == "Progressing" and w.status["failedChecks"] == 1 and w.status["currentStep"] == 1
    assert any(e.reason == "AnalysisFailed" for e in p.events)
    w.step(failed(), advance=10)
    assert w.status["phase"] == "RolledBack"


def test_provider_errors_never_promote_and_roll_back_at_the_limit() -> None:
    w = World()
    w.start_canary()
    err = analyse(Analysis(min_requests=0), None,
                  [Measurement(MetricCheck(name="error-rate", max=0.01), error="connection refused")], "t")
    assert err.verdict == "Error"
    for i in range(1, 3):
        w.step(err, advance=10)
        assert w.status["phase"] == "Progressing" and w.status["currentStep"] == 1
        assert w.status["providerErrors"] == i
    w.step(err, advance=10)  # errorLimit defaults to 3
    assert w.status["phase"] == "RolledBack"
    assert "metrics unavailable 3 times" in w.status["message"]


def test_too_little_traffic_holds_then_gives_up_without_promoting() -> None:
    w = World(rollout={"canary": dict(CANARY), "analysis": {"prometheus": PROM, "inconclusiveLimit": 3,
                                                            "metrics": [{"name": "error-rate", "max": 0.01}]}})
    w.start_canary()
    spec = w.md.spec.rollout.analysis
    quiet = analyse(spec, Measurement(None, 3.0), [Measurement(spec.metrics[0], 0.0)], "t")
    assert quiet.verdict == "Inconclusive" and "3 canary requests" in quiet.reason
    for i in (1, 2):
        w.step(quiet, advance=10)
        assert w.status["currentStep"] == 1 and w.status["inconclusiveChecks"] == i
        assert w.status["failedChecks"] == 0 and w.status["phase"] == "Progressing"
        assert "not enough traffic" in w.status["message"]
    w.step(quiet, advance=10)
    assert w.status["phase"] == "Failed" and w.stable_image().endswith(":v1")
    assert w.canary()["spec"]["replicas"] == 0  # type: ignore[index]


def test_new_revision_mid_canary_restarts_at_step_one() -> None:
    w = World()
    w.start_canary()
    w.step(passed(), advance=10)
    assert w.status["currentStep"] == 2
    w.set_model(V3)
    p = w.step()
    assert w.status["currentStep"] == 1 and w.status["canary"]["image"].endswith(":v3")
    assert any(e.reason == "CanaryRestarted" for e in p.events)
    assert w.status["history"][0]["revision"]["image"].endswith(":v2")
    assert w.canary()["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v3")  # type: ignore[index]


def test_fast_rollback_to_a_recent_stable_skips_analysis() -> None:
    w = World()
    w.start_canary()
    w.step(passed(), advance=10)
    w.step(passed(), advance=10)
    w.settle()
    assert w.status["stable"]["image"].endswith(":v2")
    w.set_model(V1)  # back to the previous, known-good revision
    p = w.step()
    assert any(e.reason == "FastRollback" for e in p.events)
    assert w.canary()["spec"]["replicas"] == 0  # type: ignore[index]
    assert w.stable_image().endswith(":v1")
    w.settle()
    assert w.status["phase"] == "Healthy" and w.status["stable"]["image"].endswith(":v1")


def test_abort_and_promote_annotations() -> None:
    w = World()
    w.settle()
    w.set_model(V2)
    w.step()
    w.body["metadata"]["annotations"] = {ANNOTATION_PROMOTE: "now"}
    p = w.step()
    assert p.decision and p.decision.promoted and p.decision.consume == [ANNOTATION_PROMOTE]
    assert w.body["metadata"]["annotations"] == {}
    assert w.stable_image().endswith(":v2")
    w.settle()
    w.set_model(V3)
    w.step()
    w.body["metadata"]["annotations"] = {ANNOTATION_ABORT: "stop"}
    p = w.step()
    assert p.decision and p.decision.rolled_back
    assert w.status["phase"] == "RolledBack" and "aborted by the user" in w.status["message"]


def test_paused_canary_holds_its_step() -> None:
    w = World()
    w.settle()
    w.set_model(V2)
    w.step()
    w.body["spec"]["paused"] = True
    w.step(advance=60)
    assert w.status["phase"] == "Paused" and w.status["currentStep"] == 1
    assert analysis_due_in(w.md, w.now) is None
    w.body["spec"]["paused"] = False
    w.step()
    assert analysis_due_in(w.md, w.now) is not None


def test_restart_resumes_from_status_alone() -> None:
    """A fresh process sees only the object and its children: the decision is the same."""
    w = World()
    w.start_canary()
    w.step(passed(), advance=10)
    frozen_body, frozen_objects = copy.deepcopy(w.body), copy.deepcopy(w.objects)
    p1 = w.step(advance=3)
    w.body, w.objects = frozen_body, frozen_objects  # "restart": same inputs, nothing remembered
    w.now -= timedelta(seconds=3)
    p2 = w.step(advance=3)
    assert p1.actions == p2.actions and p1.status == p2.status
    assert w.status["currentStep"] == 2


def test_the_step_window_starts_when_the_canary_is_ready_and_flaps_do_not_restart_it() -> None:
    w = World()
    w.settle()
    w.set_model(V2)
    w.step(ready=False)
    w.step(advance=30, ready=False)
    assert analysis_due_in(w.md, w.now) is None  # no window yet: the pods are not ready
    w.roll_out()
    w.step()
    assert analysis_due_in(w.md, w.now) == pytest.approx(10)
    # An HPA rescale makes the canary briefly not ready, again and again: the window keeps its start.
    for _ in range(3):
        w.objects[("Deployment", "room-price-canary")]["status"]["readyReplicas"] = 0
        w.step(advance=3, ready=False)
        w.roll_out()
    assert analysis_due_in(w.md, w.now) == pytest.approx(1)


def test_replicas_router_math() -> None:
    r = ReplicasRouter()
    assert [r.canary_replicas(4, w) for w in (0, 10, 25, 50, 100)] == [0, 1, 1, 4, 4]
    assert r.canary_replicas(10, 25) == 3
    assert r.achieved_weight(25, 9, 3) == 25
    assert r.achieved_weight(10, 0, 0) == 0


def test_gateway_api_route_carries_the_weights() -> None:
    body = copy.deepcopy(BASE)
    body["spec"]["rollout"] = {"canary": {"trafficRouter": {"gatewayAPI": {
        "parentRefs": [{"name": "public", "namespace": "gateways"}], "hostnames": ["price.example.com"]}}}}
    md = ModelDeployment.model_validate(body)
    objs = GatewayAPIRouter().objects(md, 25)
    route = objs[-1]
    assert route["kind"] == "HTTPRoute" and route["spec"]["parentRefs"] == [{"name": "public", "namespace": "gateways"}]
    assert [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]] == [
        ("room-price-stable", 75), ("room-price-canary", 25)]
    for svc in objs[:2]:
        validate(svc)


def test_analysis_judgement_rules() -> None:
    c = MetricCheck(name="latency-p99", max=0.5)
    spec = Analysis(min_requests=20)
    many = Measurement(None, 100.0)
    assert analyse(spec, many, [Measurement(c, 0.2)], "t").verdict == "Pass"
    assert analyse(spec, many, [Measurement(c, 0.9)], "t").verdict == "Fail"
    assert analyse(spec, many, [Measurement(c, math.nan)], "t").verdict == "Error"
    assert analyse(spec, many, [Measurement(c, None)], "t").verdict == "Error"
    assert analyse(spec, Measurement(None, None), [Measurement(c, 0.2)], "t").verdict == "Inconclusive"
    assert analyse(spec, Measurement(None, error="timeout"), [Measurement(c, 0.2)], "t").verdict == "Error"
    rec = analyse(spec, many, [Measurement(c, 0.9)], "t").records[-1]
    assert (rec.metric, rec.value, rec.max, rec.verdict) == ("latency-p99", 0.9, 0.5, "Fail")
    low = MetricCheck(name="accuracy", query="x", min=0.9)
    assert analyse(spec, many, [Measurement(low, 0.8)], "t").verdict == "Fail"


def test_queries_select_the_canary_by_relabelled_pod_labels() -> None:
    q = queries.builtin("error-rate", "ml", "price", "canary", "5d8f", "30s")
    assert 'modeldeploy_io_track="canary"' in q and 'modeldeploy_io_name="price"' in q and 'namespace="ml"' in q
    # Only this revision's series (a rolled-back canary's are still in the window), or series
    # from scrape configs that do not copy the revision label.
    assert 'modeldeploy_io_revision=~"5d8f|"' in q
    assert 'http_response_code=~"5.."' in q and "[30s]" in q
    assert queries.builtin("latency-p99", "ml", "price", "canary", "r", "1m").startswith("histogram_quantile(0.99,")
    t = "sum(rate(x{namespace='{{ namespace }}',track='{{track}}',rev='{{ revision }}'}[{{ interval }}]))"
    assert queries.render(t, namespace="ml", name="p", track="canary", revision="abc", interval="30s") == \
        "sum(rate(x{namespace='ml',track='canary',rev='abc'}[30s]))"
    with pytest.raises(ValueError):
        queries.builtin("nonsense", "ml", "p", "canary", "r", "1m")


def test_rolling_strategy_never_makes_a_canary() -> None:
    w = World(rollout={"strategy": "Rolling"})
    w.settle()
    w.set_model(V2)
    w.settle()
    assert w.canary() is None and w.status["stable"]["image"].endswith(":v2")
    assert w.status["phase"] == Phase.HEALTHY.value


# -- issue 10: counterexamples found by reading the engine; each failed before its fix -------------
def gateway_world(**spec: Any) -> World:
    router = {"gatewayAPI": {"parentRefs": [{"name": "public"}]}}
    return World(rollout={"canary": {**CANARY, "trafficRouter": router}, "analysis": {
        "prometheus": PROM, "metrics": [{"name": "error-rate", "max": 0.01}]}}, **spec)


def route_weights(w: World) -> list[int]:
    route = w.objects[("HTTPRoute", "room-price")]
    return [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]]


def test_a_cancelled_canary_is_not_promoted_without_analysis() -> None:
    """stable A -> canary B -> spec C -> spec back to B: B must run its canary again."""
    w = World()
    w.start_canary(V2)
    w.set_model(V3)
    w.step()
    assert w.status["history"][0]["result"] == "Cancelled"
    w.set_model(V2)
    p = w.step()
    assert not any(e.reason == "FastRollback" for e in p.events)
    assert w.stable_image().endswith(":v1") and w.status["canary"]["image"].endswith(":v2")
    assert w.status["currentStep"] == 1 and not (p.decision and p.decision.promoted)


def test_a_promote_request_made_while_no_canary_runs_is_ignored() -> None:
    w = World()
    w.settle()
    w.body["metadata"]["annotations"] = {ANNOTATION_PROMOTE: "true"}
    p = w.step()
    assert any(e.reason == "RequestIgnored" and e.type == "Warning" for e in p.events)
    assert w.body["metadata"]["annotations"] == {}
    assert w.status["lastRequest"]["result"] == "Ignored"
    w.set_model(V2)
    w.step()
    w.step()
    assert w.status["canary"]["image"].endswith(":v2") and w.stable_image().endswith(":v1")


def test_a_request_left_behind_by_a_crash_does_not_act_on_the_next_canary() -> None:
    w = World()
    w.start_canary(V2)
    w.keep_annotations = True  # the operator dies between the status write and the annotation removal
    w.body["metadata"]["annotations"] = {ANNOTATION_ABORT: "true"}
    w.step()
    assert w.status["phase"] == "RolledBack" and w.status["lastRequest"]["result"] == "Applied"
    w.keep_annotations = False
    w.set_model(V3)  # the next revision arrives; the old abort is still on the object
    p = w.step()
    w.step()
    assert w.status["canary"]["image"].endswith(":v3") and w.status["phase"] == "Progressing"
    assert any(e.reason == "RequestIgnored" for e in p.events)
    assert revision_hash_of(V3) not in w.status["failedRevisions"]


# -- found by the model-based test (tests/unit/test_engine_model.py); each failed before its fix -------------
@pytest.mark.parametrize("annotation", [ANNOTATION_PROMOTE, ANNOTATION_ABORT])
def test_a_stale_request_left_behind_by_a_crash_when_the_canary_started_does_not_act_on_it(annotation: str) -> None:
    """Set while no canary ran; judged stale when the next canary started; the operator died before
    removing it. After the restart it must still be stale, not a request for the canary now running."""
    w = World()
    w.settle()
    w.body["metadata"]["annotations"] = {annotation: "true"}
    w.set_model(V2)
    w.keep_annotations = True  # the operator dies between the status write and the annotation removal
    p = w.step()
    assert w.status["canary"]["image"].endswith(":v2") and w.status["lastRequest"]["result"] == "Ignored"
    assert any(e.reason == "RequestIgnored" for e in p.events)
    w.keep_annotations = False
    p = w.step()  # restarted: the canary runs and the request is still there
    assert not (p.decision and (p.decision.promoted or p.decision.rolled_back)), w.status["message"]
    assert w.status["canary"]["image"].endswith(":v2") and w.stable_image().endswith(":v1")
    assert w.status["failedRevisions"] == [] and w.body["metadata"]["annotations"] == {}
    assert any(e.reason == "RequestIgnored" and "already handled" in e.message for e in p.events)
    w.step()
    assert w.status["handledRequests"] == []  # the removal was seen: the same value set again is a new request
    w.body["metadata"]["annotations"] = {annotation: "true"}
    p = w.step()
    assert p.decision and (p.decision.promoted if annotation == ANNOTATION_PROMOTE else p.decision.rolled_back)


def test_replicas_router_reports_no_weight_for_a_new_canary_while_only_the_old_ones_pods_are_ready() -> None:
    """Canary v2 ready at step 1, then spec v3: the canary Deployment is re-templated, and until v3's pods
    are ready only v2's (superseded) pods are. v3 gets no traffic, so status must not say it does."""
    w = World()
    w.start_canary(V2)
    assert w.status["canaryWeight"] == 20  # 1 canary pod beside 4 stable ones
    w.set_model(V3)
    w.step(ready=False)
    assert w.status["canary"]["image"].endswith(":v3") and w.status["canaryWeight"] == 0
    # The Deployment controller has started the new template: v2's pod still serves, v3's is not ready.
    canary = w.canary()
    assert canary is not None
    canary["status"] = {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 1, "readyReplicas": 1,
                        "availableReplicas": 1}
    w.step(ready=False)
    assert w.status["canaryWeight"] == 0
    w.roll_out()
    w.step()
    assert w.status["canaryWeight"] == 20


def test_a_new_canary_is_not_rolled_back_for_its_predecessors_progress_deadline() -> None:
    """Canary v2 stuck (ProgressDeadlineExceeded), then spec v3: right after the re-template the canary
    Deployment's status is still the old generation's, deadline included. It says nothing about v3."""
    stuck = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    w = World()
    w.settle()
    w.set_model(V2)
    w.step(ready=False)
    canary = w.canary()
    assert canary is not None
    canary["metadata"]["generation"] = 1
    canary["status"] = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 0,
                        "conditions": [stuck]}
    w.set_model(V3)
    w.step(ready=False)
    canary = w.canary()
    assert canary is not None and w.status["canary"]["image"].endswith(":v3")
    canary["metadata"]["generation"] = 2  # the Deployment controller has not seen the new template yet
    canary["status"] = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 0,
                        "conditions": [stuck]}
    p = w.step(ready=False)
    assert not (p.decision and p.decision.rolled_back), w.status["message"]
    assert w.status["phase"] == "Progressing" and w.status["failedRevisions"] == []
    canary["status"]["observedGeneration"] = 2  # now it is v3's own deadline
    p = w.step(ready=False)
    assert p.decision and p.decision.rolled_back and "did not become ready" in w.status["message"]


def test_a_request_bound_to_another_revision_is_ignored_and_one_bound_to_this_canary_applies() -> None:
    w = World()
    w.start_canary(V2)
    w.body["metadata"]["annotations"] = {ANNOTATION_PROMOTE: "0123456789"}
    p = w.step()
    assert any(e.reason == "RequestIgnored" and "0123456789" in e.message for e in p.events)
    assert w.status["canary"] is not None
    w.body["metadata"]["annotations"] = {ANNOTATION_PROMOTE: w.status["canary"]["hash"]}
    p = w.step()
    assert p.decision and p.decision.promoted and w.status["lastRequest"]["revision"] == revision_hash_of(V2)


def test_shortening_the_steps_mid_canary_continues_at_the_last_step() -> None:
    w = World()
    w.start_canary()
    w.step(passed(), advance=10)
    assert w.status["currentStep"] == 2
    w.body["spec"]["rollout"]["canary"]["steps"] = [10]
    p = w.step()
    assert w.status["currentStep"] == 1 and any(e.reason == "StepsChanged" for e in p.events)
    w.step()
    p = w.step(passed(), advance=10)
    assert p.decision and p.decision.promoted


def test_l7_route_weight_stays_zero_until_the_canary_has_ready_pods() -> None:
    w = gateway_world()
    w.settle()
    w.set_model(V2)
    w.step(ready=False)
    assert route_weights(w) == [100, 0] and w.status["canaryWeight"] == 0
    w.step(advance=5, ready=False)  # crash-looping canary: still no traffic
    assert route_weights(w) == [100, 0]
    w.roll_out()
    w.step()
    assert route_weights(w) == [90, 10] and w.status["canaryWeight"] == 10
    w.objects[("Deployment", "room-price-canary")]["status"]["readyReplicas"] = 0  # its pods go away
    w.step(ready=False)
    assert route_weights(w) == [100, 0] and w.status["canaryWeight"] == 0


def test_l7_route_weight_is_zero_while_the_canary_is_blocked() -> None:
    w = gateway_world()
    w.start_canary()
    assert route_weights(w) == [90, 10]
    p = plan(w.md, Observed(**{**w.observed().__dict__, "problems": ["Secret 'x' does not exist"]}), w.now)
    route = next(a.body for a in p.actions if a.kind == "HTTPRoute")
    assert route is not None and [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [100, 0]
    assert p.status.canary_weight == 0


def test_switching_the_router_deletes_the_routes_it_no_longer_manages() -> None:
    w = gateway_world()
    w.start_canary()
    assert ("HTTPRoute", "room-price") in w.objects
    w.body["spec"]["rollout"]["canary"]["trafficRouter"] = {"replicas": {}}
    p = w.step()
    deleted = {(a.kind, a.name) for a in p.actions if a.verb == "delete"}
    assert deleted == {("HTTPRoute", "room-price"), ("Service", "room-price-stable"),
                       ("Service", "room-price-canary")}
    assert w.status["routing"] == []


def test_no_series_at_all_is_an_error_naming_the_monitoring_setup_not_no_traffic() -> None:
    spec = Analysis(min_requests=20)
    c = MetricCheck(name="error-rate", max=0.01)
    none = analyse(spec, Measurement(None, None), [Measurement(c, None)], "t", targets=Measurement(None, None))
    assert none.verdict == "Error" and "relabelled" in none.reason and "PodMonitor" in none.reason
    quiet = analyse(spec, Measurement(None, None), [Measurement(c, None)], "t", targets=Measurement(None, 2.0))
    assert quiet.verdict == "Inconclusive"


def test_every_query_selects_the_canary_revision() -> None:
    for q in (queries.request_count("ml", "p", "canary", "abc", "30s"),
              queries.request_delta("ml", "p", "canary", "abc", "12s"),
              queries.request_delta("ml", "p", "canary", "abc", "12s", errors=True),
              queries.targets("ml", "p", "canary", "abc"),
              *(queries.builtin(m, "ml", "p", "canary", "abc", "30s") for m in
                ("error-rate", "request-rate", "latency-p99"))):
        assert 'modeldeploy_io_revision=~"abc|"' in q, q
    delta = queries.request_delta("ml", "p", "canary", "abc", "12s")
    assert "offset 12s" in delta and "or vector(0)" in delta


# -- fail fast, pass slow ---------------------------------------------------------------------------
def probe_result(w: World, requests: float, errors: float) -> AnalysisResult:
    md = w.md
    req = measurement_due(md, view_of(md, w.observed()), w.now)
    assert req is not None and req.kind == "probe"
    r = probe(md.spec.rollout.analysis, Measurement(None, requests), Measurement(None, errors),
              [Measurement(md.spec.rollout.analysis.metrics[0])], "t", req.alpha, md.status.probe_failures)
    r.kind, r.revision = "probe", req.revision
    return r


def test_a_certainly_failing_canary_is_rolled_back_within_the_step() -> None:
    w = World(rollout={"canary": {"steps": [10, 50], "interval": "30s"}, "analysis": {
        "prometheus": PROM, "metrics": [{"name": "error-rate", "max": 0.05}]}})
    w.start_canary()
    w.now += timedelta(seconds=5)
    p = w.step(probe_result(w, requests=12, errors=6))
    assert p.decision and p.decision.rolled_back, w.status["message"]
    rec = w.status["lastAnalysis"][0]
    assert rec["early"] and rec["confidence"] == pytest.approx(1 - 0.01 / 6)
    assert "before the step's end" in w.status["message"]


def test_a_healthy_or_borderline_canary_is_never_failed_early_and_passes_only_at_the_end() -> None:
    w = World(rollout={"canary": {"steps": [10, 50], "interval": "30s"}, "analysis": {
        "prometheus": PROM, "metrics": [{"name": "error-rate", "max": 0.05}]}})
    w.start_canary()
    for n, e in ((10, 0), (30, 1), (60, 4)):  # 0 %, 3 %, 6.7 %: not certainly above 5 %
        w.now += timedelta(seconds=5)
        w.step(probe_result(w, requests=n, errors=e))
        assert w.status["phase"] == "Progressing" and w.status["currentStep"] == 1
    assert measurement_due(w.md, view_of(w.md, w.observed()), w.now + timedelta(seconds=16)).kind == "step"


def test_probes_are_paced_and_never_run_before_the_window_starts() -> None:
    w = World()
    w.settle()
    w.set_model(V2)
    w.step(ready=False)
    assert measurement_due(w.md, view_of(w.md, w.observed()), w.now + timedelta(seconds=30)) is None
    w.roll_out()
    w.step()
    md = w.md
    view = view_of(md, w.observed())
    assert measurement_due(md, view, w.now + timedelta(seconds=2)) is None
    assert measurement_due(md, view, w.now + timedelta(seconds=5)).window == "5s"  # type: ignore[union-attr]
    view.last_probe_at = w.now + timedelta(seconds=5)
    assert measurement_due(md, view, w.now + timedelta(seconds=6)) is None


def test_a_value_judged_check_fails_early_only_when_it_fails_twice_in_a_row() -> None:
    spec = Analysis(min_requests=20, metrics=[MetricCheck(name="latency-p99", max=0.5)])
    slow = [Measurement(spec.metrics[0], 0.9)]
    first = probe(spec, Measurement(None, 50.0), None, slow, "t", 0.01, suspects=0)
    assert first.verdict == "Pass" and first.suspect
    assert probe(spec, Measurement(None, 50.0), None, slow, "t", 0.01, suspects=1).verdict == "Fail"
    few = probe(spec, Measurement(None, 5.0), None, slow, "t", 0.01, suspects=1)
    assert few.verdict == "Pass" and not few.suspect  # too few requests to judge a value


def test_wilson_bound() -> None:
    assert wilson_lower(0, 100, 0.01) == 0.0
    assert wilson_lower(10, 20, 0.01) == pytest.approx(0.2693, abs=1e-4)  # z = 2.326
    # Same rate, more evidence: a tighter bound; a stricter alpha: a looser one.
    assert wilson_lower(10, 20, 0.01) < wilson_lower(50, 100, 0.01) < wilson_lower(500, 1000, 0.01) < 0.5
    assert wilson_lower(10, 20, 0.001) < wilson_lower(10, 20, 0.01)


def revision_hash_of(model: dict[str, str]) -> str:
    body = {**BASE, "spec": {**BASE["spec"], "model": model}}
    return revision_of(ModelDeployment.model_validate(body).spec.model).hash


def timeline(w: World) -> list[tuple[int, int, str]]:
    return [(e["step"], e["weight"], e["verdict"]) for e in w.status.get("timeline", [])]


def test_the_timeline_records_each_step_s_verdict_and_traffic_and_how_the_canary_ended() -> None:
    w = World(replicas=4)
    w.settle()
    w.set_model(V2)
    w.step()
    assert timeline(w) == [(1, 0, "Started")]
    w.step()  # pods ready: the 10 % step gets 1 pod of 5, 20 % of the traffic
    w.step(passed(), advance=10)
    w.step()
    w.step(failed(0.2), advance=10)
    assert timeline(w) == [(1, 0, "Started"), (1, 20, "Pass"), (2, 50, "Fail"), (2, 50, "RolledBack")]
    assert all(e["time"].endswith("Z") for e in w.status["timeline"])
    w.set_model(V3)  # a new canary starts a new timeline
    w.step()
    assert timeline(w) == [(1, 0, "Started")]
