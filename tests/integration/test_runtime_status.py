"""What admission cannot know, seen at run time (issue 12): a child write the API server refuses, a
reference that appears late, canary steps whole pods cannot give.

The operator here runs with the production backoff cap (5 min, not the 5 s the other modules use),
so a test that passed only by waiting out a short backoff would fail here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client

from localoperator import OperatorProcess
from tests.conftest import wait_for
from tests.integration.test_operator import Cluster, mdep

pytestmark = pytest.mark.cluster

CREDENTIALS_LABEL = "modeldeploy.io/prometheus-credentials"
# How long a reference stays missing before it is created: the old exponential backoff (1, 2, 4, 8,
# 16 s ...) would then have retried at 15 s and next at 31 s; the re-check comes 2 s after.
MISSING_FOR = 16.0
SEEN_WITHIN = 5.0


@pytest.fixture(scope="module")
def patient(crd: str, kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    with OperatorProcess(kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log",
                         extra_env={"MODELDEPLOY_BACKOFF_MAX_SECONDS": "300"}).start() as op:
        yield op


@pytest.fixture
def k(api_client: client.ApiClient, namespace: str, patient: OperatorProcess) -> Cluster:
    return Cluster(api_client, namespace)


def status(k: Cluster, name: str) -> dict[str, Any]:
    return k.get(name).get("status", {})  # type: ignore[no-any-return]


def condition(k: Cluster, name: str, type_: str) -> dict[str, Any] | None:
    return next((c for c in status(k, name).get("conditions", []) if c["type"] == type_), None)


def warnings(k: Cluster, name: str, reason: str) -> list[client.CoreV1Event]:
    return [e for e in k.events(name) if e.type == "Warning" and e.reason == reason]


# The quota's resource, and the child it refuses: the Deployment's create is waited for in a first pass,
# the Service's is not (controller/executor.py), so both ways a refusal can arrive are covered.
QUOTAS = {"Deployment": "count/deployments.apps", "Service": "count/services"}


@pytest.mark.parametrize("kind", list(QUOTAS))
def test_a_quota_refusing_a_child_is_degraded_with_its_message_then_recovers(
        k: Cluster, patient: OperatorProcess, kind: str) -> None:
    k.core.create_namespaced_resource_quota(k.ns, client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="no-deployments"), spec=client.V1ResourceQuotaSpec(hard={QUOTAS[kind]: "0"})))
    # Enforced as "exceeded quota" once the quota controller has filled in its status.
    wait_for(lambda: (k.core.read_namespaced_resource_quota("no-deployments", k.ns).status.hard or {}), 30,
             what="the quota's status")
    errors = patient.counter('modeldeploy_reconcile_errors_total{error="ApplyFailed"}')
    k.create(mdep("quota"))

    def degraded() -> bool:
        c = condition(k, "quota", "Degraded")
        return status(k, "quota").get("phase") == "Degraded" and c is not None and c["status"] == "True" \
            and c["reason"] == "ApplyFailed"

    wait_for(degraded, 30, what="Degraded, ApplyFailed")
    st, c = status(k, "quota"), condition(k, "quota", "Degraded")
    assert c is not None and c["message"] == st["message"]
    assert "exceeded quota: no-deployments" in st["message"] and f"create {kind} " in st["message"], st["message"]
    # Retried with backoff (1, 2, 4, 8 s ...), not in a loop; one Warning Event for them all. A child's watch
    # event is a new fact and retries sooner: the children created early in the first second, and (when the
    # Service is refused) the Deployment's pods coming up. With the Deployment refused nothing else changes
    # after the first seconds, so there the 4th refusal's retry waits its 8 s.
    def refused() -> float:
        return patient.counter('modeldeploy_reconcile_errors_total{error="ApplyFailed"}') - errors

    wait_for(lambda: refused() >= 4, 30, what="four refused passes")
    t4 = time.monotonic()
    wait_for(lambda: refused() >= 5, 30, what="a fifth refused pass")
    if kind == "Deployment":
        assert time.monotonic() - t4 >= 3.5, "retried without backing off"
    got = wait_for(lambda: warnings(k, "quota", "ApplyFailed"), 10, what="an ApplyFailed Warning Event")
    assert len(got) == 1 and got[0].message == st["message"], [e.message for e in got]
    if kind == "Deployment":
        assert k.deployment("quota") is None
    k.core.delete_namespaced_resource_quota("no-deployments", k.ns)
    wait_for(lambda: k.healthy("quota"), 60, what="Healthy once the quota is gone")
    c = condition(k, "quota", "Degraded")
    assert c is not None and c["status"] == "False"
    assert len(warnings(k, "quota", "ApplyFailed")) == 1


def missing_for(k: Cluster, name: str) -> float:
    c = condition(k, name, "Degraded")
    if c is None or c["status"] != "True" or c["reason"] != "InvalidReference":
        return 0.0
    return (datetime.now(UTC) - datetime.strptime(c["lastTransitionTime"], "%Y-%m-%dT%H:%M:%SZ")
            .replace(tzinfo=UTC)).total_seconds()


def create_service_account(k: Cluster) -> None:
    k.core.create_namespaced_service_account(k.ns, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="model-sa")))


def create_secret(k: Cluster) -> None:
    k.core.create_namespaced_secret(k.ns, client.V1Secret(
        metadata=client.V1ObjectMeta(name="prom-auth", labels={CREDENTIALS_LABEL: "true"}),
        string_data={"token": "t0ken"}))


REFERENCES = {
    "serviceAccount": ({"model": {"image": "registry.example/room-price:v1", "serviceAccountName": "model-sa"}},
                       "model-sa", create_service_account),
    "prometheusSecret": ({"rollout": {"strategy": "Canary", "canary": {"steps": [50]}, "analysis": {
        "prometheus": {"address": "http://127.0.0.1:9", "secretRef": {"name": "prom-auth"}},
        "metrics": [{"name": "error-rate", "max": 0.5}]}}}, "prom-auth", create_secret),
}


@pytest.mark.parametrize("ref", list(REFERENCES))
def test_a_missing_reference_that_appears_is_seen_within_seconds(k: Cluster, ref: str) -> None:
    spec, missing, create = REFERENCES[ref]
    k.create(mdep("late", **spec))
    wait_for(lambda: missing_for(k, "late") > 0 and missing in status(k, "late")["message"], 30,
             what="Degraded, InvalidReference")
    # Polled, not slept: the condition's own clock says how long the reference has been missing.
    wait_for(lambda: missing_for(k, "late") >= MISSING_FOR, MISSING_FOR + 10, interval=0.5,
             what=f"missing for {MISSING_FOR} s")
    create(k)
    t0 = time.monotonic()
    wait_for(lambda: status(k, "late").get("phase") not in (None, "Degraded"), 30, interval=0.1,
             what="no longer Degraded")
    took = time.monotonic() - t0
    print(f"\n{ref}: seen {took:.2f} s after it was created (missing for {MISSING_FOR} s)")
    assert took < SEEN_WITHIN, f"{ref} created {took:.1f} s ago, still Degraded until then"
    c = condition(k, "late", "Degraded")
    assert c is not None and c["status"] == "False"


def test_steps_whole_pods_cannot_give_are_a_condition_and_a_warning_event(k: Cluster) -> None:
    k.create(mdep("steps", replicas=2, rollout={"strategy": "Canary", "canary": {"steps": [10, 25, 50]}}))
    c = wait_for(lambda: condition(k, "steps", "StepsApproximate"), 30, what="StepsApproximate")
    assert c["status"] == "True" and "10% gets 33%" in c["message"] and "run at least 6" in c["message"]
    got = wait_for(lambda: warnings(k, "steps", "StepsApproximate"), 10, what="a StepsApproximate Warning Event")
    assert got[0].message == c["message"]
    k.patch("steps", {"replicas": 6})
    wait_for(lambda: condition(k, "steps", "StepsApproximate") is None and k.healthy("steps"), 60,
             what="StepsApproximate gone at 6 replicas")
