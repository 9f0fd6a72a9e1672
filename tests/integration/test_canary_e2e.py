"""Canary rollouts end to end: the real operator, control plane, Prometheus and BentoML servers.

Each scenario deploys v1, then applies v2 while a load generator splits real /predict requests
between a stable and a canary BentoML server in the weight the operator reports. The operator
queries a real Prometheus that scrapes both servers with the track labels.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from canarylab import LoadGenerator, targets
from localcluster import free_port
from localoperator import OperatorProcess
from localprom import PrometheusServer
from tests.conftest import wait_for
from tests.integration.test_operator import Cluster, mdep

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

V1 = {"image": "registry.example/room-price:v1", "bento": "room_price:v1"}
V2 = {"image": "registry.example/room-price:v2", "bento": "room_price:v2"}
V3 = {"image": "registry.example/room-price:v3", "bento": "room_price:v3"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Real BentoML servers: a stable model, a healthy canary, a 5xx canary and a slow canary."""
    from modeldeploy_model.testing import build_test_artifact, serve_subprocess

    base = tmp_path_factory.mktemp("models")
    v1 = build_test_artifact(base / "v1", version_seed=1)
    v2 = build_test_artifact(base / "v2", version_seed=2)
    specs = {"stable": (v1, {}), "good": (v2, {}), "errors": (v2, {"MODELDEPLOY_FAULT_ERROR_RATE": "0.5"}),
             "slow": (v2, {"MODELDEPLOY_FAULT_LATENCY_MS": "400"})}
    started: dict[str, Any] = {}
    errors: list[BaseException] = []

    def start(key: str) -> None:
        art, env = specs[key]
        try:
            started[key] = serve_subprocess(art, port=free_port(), env=env, log_path=base / f"{key}.log")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start, args=(k,)) for k in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        if errors:
            raise errors[0]
        yield started
    finally:
        for s in started.values():
            s.stop()


@pytest.fixture
def k(api_client: client.ApiClient, namespace: str, operator: OperatorProcess) -> Cluster:
    return Cluster(api_client, namespace)


@pytest.fixture
def scenario(k: Cluster, servers: dict[str, Any], prometheus: Callable[..., PrometheusServer]) -> Iterator[Any]:
    """`scenario(server="good"|"errors"|"slow", **spec)`: v1 Healthy, Prometheus + load running, ready for v2."""
    loads: list[LoadGenerator] = []

    def start(server: str = "good", load: bool = True, prometheus_address: str | None = None, name: str = "price",
              **spec: Any) -> tuple[PrometheusServer, LoadGenerator | None]:
        prom = prometheus(targets(k.ns, name, servers["stable"].url, servers[server].url), scrape_interval="1s")
        analysis = {"prometheus": {"address": prometheus_address or prom.url, "timeout": "2s"},
                    "minRequests": 10, "failureLimit": 1, "errorLimit": 2,
                    "metrics": [{"name": "error-rate", "max": 0.05}, {"name": "latency-p99", "max": 0.25}]}
        analysis.update(spec.pop("analysis", {}))
        rollout = {"strategy": "Canary", "canary": {"steps": [25, 50], "interval": "4s"}, "analysis": analysis}
        rollout["canary"].update(spec.pop("canary", {}))  # type: ignore[union-attr]
        k.create(mdep(name, model=V1, rollout=rollout, **spec))
        wait_for(lambda: k.healthy(name), 60, what=f"{name} v1 Healthy")
        wait_for(prom.targets_up, 30, what="both servers scraped")
        gen = None
        if load:
            gen = LoadGenerator(servers["stable"].url, servers[server].url,
                                weight=lambda: int(k.get(name).get("status", {}).get("canaryWeight", 0)),
                                max_seconds=150).start()
            loads.append(gen)
        return prom, gen

    try:
        yield start
    finally:
        for g in loads:
            g.stop()


def status(k: Cluster, name: str = "price") -> dict[str, Any]:
    return k.get(name).get("status", {})  # type: ignore[no-any-return]


def canary_replicas(k: Cluster, name: str = "price") -> int | None:
    dep = k.deployment(f"{name}-canary")
    return None if dep is None else int(dep.spec.replicas or 0)


def test_healthy_canary_is_promoted_through_all_steps(k: Cluster, scenario: Any) -> None:
    _, load = scenario("good")
    seen: set[int] = set()

    def promoted() -> bool:
        st = status(k)
        seen.add(int(st.get("canaryWeight", 0)))
        return st.get("stable", {}).get("image", "").endswith(":v2") and st.get("phase") == "Healthy"

    k.patch("price", {"model": V2})
    wait_for(promoted, 90, interval=0.2, what="v2 promoted and Healthy")
    st = status(k)
    assert {33, 50} <= seen, seen  # 2 stable pods: 1 canary pod = 33 %, then 2 = 50 %
    assert st.get("canary") is None and st["canaryWeight"] == 0 and st["failedChecks"] == 0
    assert st["history"][0]["revision"]["image"].endswith(":v1")
    passes = [a for a in st["lastAnalysis"] if a["metric"] == "error-rate" and a["verdict"] == "Pass"]
    assert passes and passes[0]["value"] == 0 and passes[0]["max"] == 0.05
    reasons = [e.reason for e in k.events("price")]
    assert "CanaryStarted" in reasons and "StepAdvanced" in reasons and "Promoted" in reasons
    assert canary_replicas(k) == 0
    assert load is not None and load.sent["canary"] > 20 and load.errors["canary"] == 0

    # Fast rollback: v1 ran healthy as stable moments ago, so going back skips the analysis.
    k.patch("price", {"model": V1})
    wait_for(lambda: status(k).get("stable", {}).get("image", "").endswith(":v1") and k.healthy("price"), 30,
             what="fast rollback to v1")
    assert "FastRollback" in [e.reason for e in k.events("price")]
    assert canary_replicas(k) == 0


def test_canary_returning_5xx_is_rolled_back(k: Cluster, scenario: Any, operator: OperatorProcess) -> None:
    scenario("errors")
    k.patch("price", {"model": V2})
    wait_for(lambda: status(k).get("phase") == "RolledBack", 60, what="RolledBack")
    st = status(k)
    assert "error-rate" in st["message"] and "want <= 0.05" in st["message"]
    assert st["canaryWeight"] == 0 and st["stable"]["image"].endswith(":v1")
    failed = [a for a in st["lastAnalysis"] if a["verdict"] == "Fail"]
    assert failed and failed[0]["metric"] == "error-rate" and failed[0]["value"] > 0.05
    wait_for(lambda: canary_replicas(k) == 0, 10, what="canary scaled to 0")
    warnings = [e for e in k.events("price") if e.type == "Warning" and e.reason == "RolledBack"]
    assert warnings and "error-rate" in warnings[0].message
    assert operator.counter(f'modeldeploy_rollbacks_total{{name="price",namespace="{k.ns}"}}') == 1
    # Remembered: the failed revision is not retried while the spec stays the same.
    n = operator.counter('modeldeploy_reconciles_total{result="ok"}')
    wait_for(lambda: operator.counter('modeldeploy_reconciles_total{result="ok"}') >= n + 3, 30,
             what="a few more reconciles")
    assert status(k)["phase"] == "RolledBack" and canary_replicas(k) == 0


def test_slow_canary_is_rolled_back_on_latency(k: Cluster, scenario: Any) -> None:
    scenario("slow")
    k.patch("price", {"model": V2})
    wait_for(lambda: status(k).get("phase") == "RolledBack", 60, what="RolledBack on latency")
    st = status(k)
    assert "latency-p99" in st["message"]
    rec = next(a for a in st["lastAnalysis"] if a["metric"] == "latency-p99" and a["verdict"] == "Fail")
    assert rec["value"] >= 0.3 and rec["max"] == 0.25


def test_prometheus_unreachable_never_promotes_and_rolls_back_after_the_error_limit(k: Cluster, scenario: Any
                                                                                    ) -> None:
    scenario("good", prometheus_address=f"http://127.0.0.1:{free_port()}")
    k.patch("price", {"model": V2})
    seen_steps: set[int] = set()

    def rolled_back() -> bool:
        st = status(k)
        seen_steps.add(int(st.get("currentStep", 0)))
        return st.get("phase") == "RolledBack"

    wait_for(rolled_back, 60, interval=0.2, what="RolledBack after provider errors")
    st = status(k)
    assert "metrics unavailable 2 times" in st["message"]
    assert seen_steps <= {0, 1}, seen_steps  # never went past the first step
    assert st["stable"]["image"].endswith(":v1")
    assert any(a["verdict"] == "Error" for a in st["lastAnalysis"])


def test_no_traffic_is_inconclusive_and_held(k: Cluster, scenario: Any) -> None:
    scenario("good", load=False, analysis={"inconclusiveLimit": 50})
    k.patch("price", {"model": V2})
    wait_for(lambda: status(k).get("inconclusiveChecks", 0) >= 3, 60, what="three inconclusive analyses")
    st = status(k)
    assert st["phase"] == "Progressing" and st["currentStep"] == 1 and st["failedChecks"] == 0
    assert st["stable"]["image"].endswith(":v1") and st["canary"]["image"].endswith(":v2")
    assert "not enough traffic" in st["message"]
    rec = st["lastAnalysis"][0]
    assert rec["verdict"] == "Inconclusive" and rec["metric"] == "requests" and rec["min"] == 10


def test_operator_killed_mid_canary_resumes_at_the_same_step(
    k: Cluster, scenario: Any, operator: OperatorProcess
) -> None:
    scenario("good", canary={"steps": [20, 40, 60], "interval": "5s"})
    k.patch("price", {"model": V2})
    wait_for(lambda: status(k).get("currentStep") == 2, 60, what="step 2")
    operator.stop(signal.SIGKILL)
    at_kill = status(k)
    operator.start()
    steps: list[int] = []

    def promoted() -> bool:
        st = status(k)
        steps.append(int(st.get("currentStep", 0)))
        return st.get("stable", {}).get("image", "").endswith(":v2") and st.get("phase") == "Healthy"

    wait_for(promoted, 90, interval=0.2, what="promotion after the restart")
    assert at_kill["currentStep"] == 2
    before_promotion = [s for s in steps if s]
    assert before_promotion and min(before_promotion) >= 2, steps  # never back to step 1
    deployments = sorted(d.metadata.name for d in k.apps.list_namespaced_deployment(k.ns).items)
    assert deployments == ["price", "price-canary"]
    assert len(k.core.list_namespaced_service(k.ns).items) == 1


def test_new_revision_mid_canary_restarts_from_step_one(k: Cluster, scenario: Any) -> None:
    scenario("good", canary={"steps": [20, 40, 60], "interval": "5s"})
    k.patch("price", {"model": V2})
    wait_for(lambda: status(k).get("currentStep") == 2, 60, what="step 2 of v2")
    k.patch("price", {"model": V3})
    wait_for(lambda: (status(k).get("canary") or {}).get("image", "").endswith(":v3"), 30, what="canary v3")
    st = status(k)
    assert st["currentStep"] == 1
    assert st["history"][0]["revision"]["image"].endswith(":v2") and st["history"][0]["result"] == "Superseded"
    dep = k.deployment("price-canary")
    assert dep is not None and dep.spec.template.spec.containers[0].image.endswith(":v3")


def test_abort_annotation_rolls_back(k: Cluster, scenario: Any) -> None:
    scenario("good", canary={"steps": [20, 40, 60], "interval": "30s"})
    k.patch("price", {"model": V2})
    wait_for(lambda: status(k).get("currentStep") == 1 and canary_replicas(k), 30, what="canary running")
    k.custom.patch_namespaced_custom_object("modeldeploy.io", "v1alpha1", k.ns, "modeldeployments", "price",
                                            {"metadata": {"annotations": {"modeldeploy.io/abort": "now"}}})
    wait_for(lambda: status(k).get("phase") == "RolledBack", 30, what="aborted")
    assert "aborted by the user" in status(k)["message"]
    wait_for(lambda: "modeldeploy.io/abort" not in (k.get("price")["metadata"].get("annotations") or {}), 10,
             what="annotation consumed")
