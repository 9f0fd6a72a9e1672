"""Canary rollouts on the real node: model images built here, the operator installed by its chart,
Prometheus discovering the pods, and traffic through the model's Service.

Each scenario deploys v1 (2 pods), starts a load generator against the Service's ClusterIP (it
never reads the operator's status: the split is whatever kube-proxy does with the ready
endpoints) and applies a v2: healthy, failing 50 % of requests (an injected fault set through
`spec.model.env`), or 400 ms slow. Responses name the model version that answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from canarylab import ServiceLoad
from localcluster import free_port
from localoperator import InClusterOperator
from localprom import PrometheusServer
from tests.conftest import wait_for
from tests.e2e.conftest import Images, RealCluster
from tests.integration.test_operator import mdep

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.prometheus, pytest.mark.slow]

FAULTS = {
    "good": [],
    "errors": [{"name": "MODELDEPLOY_FAULT_ERROR_RATE", "value": "0.5"}],
    "slow": [{"name": "MODELDEPLOY_FAULT_LATENCY_MS", "value": "400"}],
}


@pytest.fixture
def scenario(rk: RealCluster, node_images: Images, prometheus_sd: PrometheusServer
             ) -> Iterator[Callable[..., ServiceLoad | None]]:
    """`scenario(**spec)`: v1 (or `model`) Healthy with 2 Ready pods, both scraped, load running through the
    Service; `analysis` and `canary` update the defaults below."""
    loads: list[ServiceLoad] = []

    def start(load: bool = True, prometheus_address: str | None = None, name: str = "price",
              model: dict[str, Any] | None = None, **spec: Any) -> ServiceLoad | None:
        analysis = {"prometheus": {"address": prometheus_address or prometheus_sd.url, "timeout": "2s"},
                    "minRequests": 10, "failureLimit": 1, "errorLimit": 2,
                    "metrics": [{"name": "error-rate", "max": 0.05}, {"name": "latency-p99", "max": 0.3}]}
        analysis.update(spec.pop("analysis", {}))
        rollout = {"strategy": "Canary", "canary": {"steps": [25, 50], "interval": "5s"}, "analysis": analysis}
        rollout["canary"].update(spec.pop("canary", {}))  # type: ignore[union-attr]
        rk.create(mdep(name, model=model or node_images.model("v1"), rollout=rollout, **spec))
        wait_for(lambda: rk.healthy(name), 180, what=f"{name} v1 Healthy")
        wait_for(lambda: len([t for t in prometheus_sd.discovered(namespace=rk.ns, modeldeploy_io_name=name)
                              if t["health"] == "up"]) == 2, 60, what="both v1 pods discovered and scraped")
        if not load:
            return None
        gen = ServiceLoad(rk.wait_service_answers(name), max_seconds=200).start()
        loads.append(gen)
        return gen

    try:
        yield start
    finally:
        for g in loads:
            g.stop()


def v2(node_images: Images, fault: str = "good") -> dict[str, Any]:
    return node_images.model("v2", env=FAULTS[fault])


def canary_replicas(rk: RealCluster, name: str = "price") -> int | None:
    dep = rk.deployment(f"{name}-canary")
    return None if dep is None else int(dep.spec.replicas or 0)


def test_healthy_canary_is_promoted_with_the_observed_split_matching_the_weight(
        rk: RealCluster, scenario: Any, node_images: Images, incluster_operator: InClusterOperator) -> None:
    load: ServiceLoad = scenario(canary={"steps": [34, 50], "interval": "10s"})
    t_apply = time.monotonic()
    steps: list[tuple[float, int]] = []  # (when the reported weight changed, weight)

    def promoted() -> bool:
        st = rk.status("price")
        w = int(st.get("canaryWeight", 0))
        if not steps or steps[-1][1] != w:
            steps.append((time.monotonic(), w))
        return st.get("stable", {}).get("image", "").endswith(":v2") and st.get("phase") == "Healthy"

    rk.patch("price", {"model": v2(node_images)})
    wait_for(promoted, 240, interval=0.2, what="v2 promoted and Healthy")
    t_done = time.monotonic()
    # Every request answered, through every step and the promotion itself.
    wait_for(lambda: rk.ready_pods("modeldeploy.io/track=canary") == [], 60, what="canary pods gone")
    assert load.failures(since=t_apply) == {}, load.by_version(since=t_apply)
    # The split a client saw, next to the weight the operator reported (1 s after each change for
    # kube-proxy to catch up; the last change is the promotion).
    v2_version = node_images.versions["v2"]
    shares = []
    for (t0, w), (t1, _) in zip(steps, [*steps[1:], (t_done, 0)], strict=True):
        if w and t1 - t0 > 4:
            shares.append((w, load.share(v2_version, since=t0 + 1, until=t1)))
    print(f"\nreported weight -> observed v2 share: {shares}; promoted {t_done - t_apply:.1f}s after the apply")
    assert {w for w, _ in shares} >= {33, 50}, steps  # 2 stable pods: 1 canary pod = 33 %, then 2 = 50 %
    for w, share in shares:
        assert share is not None and abs(share - w) <= 12, shares
    st = rk.status("price")
    assert st.get("canary") is None and st["canaryWeight"] == 0 and st["failedChecks"] == 0
    assert {p.status.container_statuses[0].image.rsplit(":", 1)[-1] for p in rk.ready_pods("modeldeploy.io/name=price")
            } == {"v2"}
    reasons = [e.reason for e in rk.events("price")]
    assert "CanaryStarted" in reasons and "StepAdvanced" in reasons and "Promoted" in reasons
    # The operator did all of it with the chart's RBAC and nothing more (its log lines for this namespace; earlier
    # tests' namespaces, deleted, refuse new objects with 403 NamespaceTerminating, which is no RBAC matter).
    logs = "\n".join(line for line in incluster_operator.logs().splitlines() if rk.ns in line)
    assert "forbidden" not in logs.lower() and " 403" not in logs, logs[-3000:]

    # Fast rollback: v1 ran healthy as stable moments ago, so going back skips the analysis.
    t_back = time.monotonic()
    rk.patch("price", {"model": node_images.model("v1")})
    wait_for(lambda: rk.status("price").get("stable", {}).get("image", "").endswith(":v1") and rk.healthy("price"),
             120, what="fast rollback to v1")
    assert "FastRollback" in [e.reason for e in rk.events("price")]
    wait_for(lambda: {p.status.container_statuses[0].image.rsplit(":", 1)[-1]
                      for p in rk.ready_pods("modeldeploy.io/name=price")} == {"v1"}, 120, what="only v1 pods")
    assert load.failures(since=t_back) == {}, load.by_version(since=t_back)


def test_canary_returning_5xx_is_rolled_back_and_only_its_own_requests_fail(
        rk: RealCluster, scenario: Any, node_images: Images, incluster_operator: InClusterOperator) -> None:
    load: ServiceLoad = scenario()
    t_apply = time.monotonic()
    rk.patch("price", {"model": v2(node_images, "errors")})
    wait_for(lambda: rk.status("price").get("phase") == "RolledBack", 120, what="RolledBack")
    rolled_back = time.monotonic() - t_apply
    st = rk.status("price")
    assert "error-rate" in st["message"] and "want <= 0.05" in st["message"]
    assert st["canaryWeight"] == 0 and st["stable"]["image"].endswith(":v1")
    failed = [a for a in st["lastAnalysis"] if a["verdict"] == "Fail"]
    assert failed and failed[0]["metric"] == "error-rate" and failed[0]["value"] > 0.05
    wait_for(lambda: canary_replicas(rk) == 0 and not rk.ready_pods("modeldeploy.io/track=canary"), 60,
             what="canary scaled to 0")
    warnings = [e for e in rk.events("price") if e.type == "Warning" and e.reason == "RolledBack"]
    assert warnings and "error-rate" in warnings[0].message
    assert incluster_operator.counter(f'modeldeploy_rollbacks_total{{name="price",namespace="{rk.ns}"}}') == 1
    # Only the faulty version's own answers failed: none of v1's, none without an answer.
    fails = load.failures(since=t_apply)
    no_answer = [(round(t - t_apply, 1), v) for t, v, code in load.window(t_apply) if code == 0]
    assert set(fails) == {node_images.versions["v2"]}, (load.by_version(since=t_apply), no_answer,
                                                        f"rolled back at {rolled_back:.1f}s", rk.events_text())
    t_after = time.monotonic()
    wait_for(lambda: sum(c["ok"] for c in load.by_version(since=t_after).values()) >= 40, 30,
             what="40 more answers")
    assert load.failures(since=t_after) == {} and set(load.by_version(since=t_after)) == {node_images.versions["v1"]}
    print(f"\nrolled back {rolled_back:.1f}s after the apply; failed requests by version: {fails}")

    # The next, healthy revision is judged on its own series, not on the rolled-back v2's that
    # may still be inside its first window (the queries select the revision).
    rk.patch("price", {"model": node_images.model("v3")})
    wait_for(lambda: (rk.status("price").get("canary") or {}).get("image", "").endswith(":v3"), 60,
             what="v3 canary started")

    def v3_decided() -> bool:
        st = rk.status("price")
        return st.get("phase") in ("RolledBack", "Failed") or (
            st.get("phase") == "Healthy" and st.get("stable", {}).get("image", "").endswith(":v3"))

    wait_for(v3_decided, 180, what="v3 promoted or rolled back")
    assert rk.status("price")["phase"] == "Healthy", rk.status("price").get("message")


def test_a_failing_canary_is_rolled_back_long_before_its_step_ends(
        rk: RealCluster, scenario: Any, node_images: Images) -> None:
    """Fail fast: with a 60 s step, an in-step measurement catches a canary failing 50 % of
    requests as soon as its failure is certain; the rollback does not wait for the step's end."""
    scenario(canary={"steps": [25, 50], "interval": "60s"})
    t_apply = time.monotonic()
    rk.patch("price", {"model": v2(node_images, "errors")})
    wait_for(lambda: rk.status("price").get("stepReadyAt") is not None or rk.status("price").get("phase") ==
             "RolledBack", 120, what="the canary's step window started")
    t_ready = time.monotonic()
    # The window is 60 s; the rollback must come well inside it.
    wait_for(lambda: rk.status("price").get("phase") == "RolledBack", 40, what="RolledBack within the step")
    st = rk.status("price")
    early = st["lastAnalysis"][0]
    assert early["metric"] == "error-rate" and early["verdict"] == "Fail" and early["early"], st["lastAnalysis"]
    assert early["confidence"] is not None and early["confidence"] >= 0.99
    assert "before the step's end" in st["message"] and st["canaryWeight"] == 0
    print(f"\nrolled back {time.monotonic() - t_ready:.1f}s after the canary's window began "
          f"({time.monotonic() - t_apply:.1f}s after the apply), step interval 60s")


def test_slow_canary_is_rolled_back_on_latency(rk: RealCluster, scenario: Any, node_images: Images) -> None:
    scenario()
    rk.patch("price", {"model": v2(node_images, "slow")})
    wait_for(lambda: rk.status("price").get("phase") == "RolledBack", 120, what="RolledBack on latency")
    st = rk.status("price")
    assert "latency-p99" in st["message"]
    rec = next(a for a in st["lastAnalysis"] if a["metric"] == "latency-p99" and a["verdict"] == "Fail")
    assert rec["value"] >= 0.3 and rec["max"] == 0.3


def test_prometheus_unreachable_never_promotes_and_rolls_back_after_the_error_limit(
        rk: RealCluster, scenario: Any, node_images: Images) -> None:
    # 127.0.0.1 inside the operator's pod: nothing listens there.
    scenario(prometheus_address=f"http://127.0.0.1:{free_port()}")
    rk.patch("price", {"model": v2(node_images)})
    seen_steps: set[int] = set()

    def rolled_back() -> bool:
        st = rk.status("price")
        seen_steps.add(int(st.get("currentStep", 0)))
        return st.get("phase") == "RolledBack"

    wait_for(rolled_back, 120, interval=0.2, what="RolledBack after provider errors")
    st = rk.status("price")
    assert "metrics unavailable 2 times" in st["message"]
    assert seen_steps <= {0, 1}, seen_steps  # never went past the first step
    assert st["stable"]["image"].endswith(":v1")
    assert any(a["verdict"] == "Error" for a in st["lastAnalysis"])


def test_no_traffic_is_inconclusive_and_held(rk: RealCluster, scenario: Any, node_images: Images) -> None:
    scenario(load=False, analysis={"inconclusiveLimit": 50})
    rk.patch("price", {"model": v2(node_images)})
    wait_for(lambda: rk.status("price").get("inconclusiveChecks", 0) >= 3, 120, what="three inconclusive analyses")
    st = rk.status("price")
    assert st["phase"] == "Progressing" and st["currentStep"] == 1 and st["failedChecks"] == 0
    assert st["stable"]["image"].endswith(":v1") and st["canary"]["image"].endswith(":v2")
    assert "not enough traffic" in st["message"]
    rec = st["lastAnalysis"][0]
    assert rec["verdict"] == "Inconclusive" and rec["metric"] == "requests" and rec["min"] == 10


def test_operator_pod_deleted_mid_canary_resumes_at_the_same_step(
        rk: RealCluster, scenario: Any, node_images: Images, incluster_operator: InClusterOperator) -> None:
    scenario(canary={"steps": [20, 40, 60], "interval": "8s"})
    rk.patch("price", {"model": v2(node_images)})
    wait_for(lambda: rk.status("price").get("currentStep") == 2, 120, what="step 2")
    incluster_operator.restart_pod()
    at_restart = rk.status("price")
    steps: list[int] = []

    last: dict[str, Any] = {}

    def promoted() -> bool:
        st = rk.status("price")
        last.update(st)
        steps.append(int(st.get("currentStep", 0)))
        return st.get("stable", {}).get("image", "").endswith(":v2") and st.get("phase") == "Healthy"

    try:
        wait_for(promoted, 180, interval=0.2, what="promotion after the operator's new pod took over")
    except AssertionError as e:
        raise AssertionError(f"{e}\nstatus: {last}\nevents: {[(ev.reason, ev.message) for ev in rk.events('price')]}"
                             f"\noperator log: {incluster_operator.logs()[-4000:]}") from None
    assert at_restart["currentStep"] >= 2
    before_promotion = [s for s in steps if s]
    assert before_promotion and min(before_promotion) >= 2, steps  # never back to step 1
    deployments = sorted(d.metadata.name for d in rk.apps.list_namespaced_deployment(rk.ns).items)
    assert deployments == ["price", "price-canary"]
    assert len(rk.core.list_namespaced_service(rk.ns).items) == 1


def test_new_revision_mid_canary_restarts_from_step_one(rk: RealCluster, scenario: Any, node_images: Images) -> None:
    scenario(canary={"steps": [20, 40, 60], "interval": "8s"})
    rk.patch("price", {"model": v2(node_images)})
    wait_for(lambda: rk.status("price").get("currentStep") == 2, 120, what="step 2 of v2")
    rk.patch("price", {"model": node_images.model("v3")})
    wait_for(lambda: (rk.status("price").get("canary") or {}).get("image", "").endswith(":v3"), 60, what="canary v3")
    st = rk.status("price")
    assert st["currentStep"] == 1
    assert st["history"][0]["revision"]["image"].endswith(":v2") and st["history"][0]["result"] == "Cancelled"
    dep = rk.deployment("price-canary")
    assert dep is not None and dep.spec.template.spec.containers[0].image.endswith(":v3")
    wait_for(lambda: {p.status.container_statuses[0].image.rsplit(":", 1)[-1]
                      for p in rk.ready_pods("modeldeploy.io/track=canary")} == {"v3"}, 120,
             what="v3 canary pods Ready")


def test_abort_annotation_rolls_back(rk: RealCluster, scenario: Any, node_images: Images) -> None:
    scenario(canary={"steps": [20, 40, 60], "interval": "60s"})
    rk.patch("price", {"model": v2(node_images)})
    wait_for(lambda: rk.status("price").get("currentStep") == 1 and canary_replicas(rk), 60, what="canary running")
    rk.custom.patch_namespaced_custom_object("modeldeploy.io", "v1alpha1", rk.ns, "modeldeployments", "price",
                                             {"metadata": {"annotations": {"modeldeploy.io/abort": "now"}}})
    wait_for(lambda: rk.status("price").get("phase") == "RolledBack", 60, what="aborted")
    assert "aborted by the user" in rk.status("price")["message"]
    wait_for(lambda: "modeldeploy.io/abort" not in (rk.get("price")["metadata"].get("annotations") or {}), 30,
             what="annotation consumed")
    wait_for(lambda: not rk.ready_pods("modeldeploy.io/track=canary"), 60, what="canary pods gone")
