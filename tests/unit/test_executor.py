"""The executor: a new object's independent children are created at once (only its Deployment waited for),
everything else in plan order."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from kubernetes.client.rest import ApiException

from modeldeploy.controller.executor import ApplyFailed, Executor, concurrent_creates
from modeldeploy.k8s import Kube
from modeldeploy.reconcile import Event, Observed, plan
from tests.unit.helpers import md

NOW = datetime(2026, 1, 1, tzinfo=UTC)

DELAY = 0.3  # each write "takes" this long, as a loaded API server's answer does; a Service create 3x as long


class SlowKube:
    """Records writes; each takes DELAY. No server: the executor's own ordering is what is tested."""

    def __init__(self, fail_kind: str = "", refusal: ApiException | None = None) -> None:
        self.fail_kind = fail_kind
        self.refusal = refusal  # what the API server answers a write of fail_kind (else a RuntimeError)
        self.calls: list[tuple[str, str, float, float]] = []
        self.lock = threading.Lock()
        self.cached: dict[str, Any] = {}

    def observe(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        self.cached[kind] = obj

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self.cached.pop(kind, None)

    def get_fresh(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return None  # the executor asks before each create: nobody else's object of that name

    def _write(self, verb: str, kind: str) -> dict[str, Any]:
        t0 = time.monotonic()
        time.sleep(3 * DELAY if (verb, kind) == ("apply", "Service") else DELAY)
        with self.lock:
            self.calls.append((verb, kind, t0, time.monotonic()))
        if kind == self.fail_kind:
            if self.refusal is not None:
                raise self.refusal
            raise RuntimeError(f"{kind} refused")
        return {"metadata": {"resourceVersion": "7"}}

    def apply(self, obj: dict[str, Any], manager: str = "modeldeploy") -> dict[str, Any]:
        return self._write("apply", obj["kind"])

    def patch_merge(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._write("patch", kind)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self._write("delete", kind)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any],
                     resource_version: str | None = None) -> dict[str, Any]:
        return self._write("status", "ModelDeployment")

    def event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self._write("event", reason)


def _fresh() -> Any:
    m = md(replicas=2)  # a Deployment, a Service and a PodDisruptionBudget to create
    m.metadata["resourceVersion"] = "6"
    return m, plan(m, Observed(), NOW)


def test_a_new_objects_children_are_created_concurrently_and_only_the_deployment_is_waited_for() -> None:
    m, p = _fresh()
    kinds = [a.kind for a in p.actions]
    assert kinds[:3] == ["Deployment", "Service", "PodDisruptionBudget"] and concurrent_creates(p.actions) == 3
    kube = SlowKube()
    ex = Executor(cast(Kube, kube))
    t0 = time.monotonic()
    ex.execute(m, p)
    took = time.monotonic() - t0
    done = [c[1] for c in kube.calls]
    assert "Deployment" in done and "Service" not in done, f"written when the pass returned: {done}"
    # The others are in flight, and in the cache as desired, so the next pass does not create them again.
    assert set(kube.cached) == {"Service", "PodDisruptionBudget"}
    ex.close()
    assert sorted(c[1] for c in kube.calls) == sorted(kinds)
    assert took < 2 * DELAY, f"the pass took {took:.2f} s: it waited for the Service create"


def test_updates_keep_the_plans_order() -> None:
    m, p = _fresh()
    for a in p.actions:
        a.new = False  # the same writes as updates of existing objects
    assert concurrent_creates(p.actions) == 0
    kube = SlowKube()
    Executor(cast(Kube, kube)).execute(m, p)
    assert [c[1] for c in kube.calls] == [a.kind for a in p.actions]
    assert all(a[3] <= b[2] for a, b in zip(kube.calls, kube.calls[1:], strict=False)), "writes overlapped"


def test_a_failed_background_create_is_forgotten_and_its_owner_retried() -> None:
    m, p = _fresh()
    kube = SlowKube(fail_kind="Service")
    retried: list[tuple[str, str, str]] = []
    ex = Executor(cast(Kube, kube), on_create_failed=lambda ns, name, msg: retried.append((ns, name, msg)))
    ex.execute(m, p)
    ex.close()
    assert retried == [(m.namespace, m.name, "")]
    assert "Service" not in kube.cached  # the next pass asks the server, and creates it again


def test_a_background_create_refused_by_a_terminating_namespace_is_dropped_quietly(
        caplog: pytest.LogCaptureFixture) -> None:
    """Deleting a namespace deletes the children first; their deletion wakes a reconcile that re-creates them,
    and the server refuses with 403 NamespaceTerminating: nothing to retry, no warning."""
    m, p = _fresh()
    terminating = ApiException(status=403, reason="Forbidden")
    terminating.body = json.dumps({"reason": "Forbidden", "details": {"causes": [{"reason": "NamespaceTerminating"}]}})
    kube = SlowKube(fail_kind="Service", refusal=terminating)
    retried: list[tuple[str, str, str]] = []
    ex = Executor(cast(Kube, kube), on_create_failed=lambda ns, name, msg: retried.append((ns, name, msg)))
    with caplog.at_level("WARNING", logger="modeldeploy.controller.executor"):
        ex.execute(m, p)
        ex.close()
    assert retried == [] and not caplog.records
    assert "Service" not in kube.cached


def test_a_failed_deployment_create_fails_the_pass() -> None:
    m, p = _fresh()
    ex = Executor(cast(Kube, SlowKube(fail_kind="Deployment")))
    with pytest.raises(RuntimeError, match="Deployment refused"):
        ex.execute(m, p)
    ex.close()


def test_a_first_pass_writes_its_status_first_and_posts_events_in_the_background() -> None:
    m, p = _fresh()
    assert p.events and concurrent_creates(p.actions) == len(p.actions)
    kube = SlowKube()
    ex = Executor(cast(Kube, kube))
    t0 = time.monotonic()
    assert ex.run(m, {"metadata": m.metadata}, p) == "7"
    took = time.monotonic() - t0
    calls = {c[1]: c for c in kube.calls}
    # The status write is the optimistic lock: nothing is written before it has succeeded.
    assert calls["ModelDeployment"][3] <= calls["Deployment"][2], "the Deployment was created before the status"
    assert not any(c[0] == "event" for c in kube.calls), "the pass waited for its Events"
    assert took < 3 * DELAY
    ex.close()
    assert [c[1] for c in kube.calls if c[0] == "event"] == [e.reason for e in p.events]


def test_a_pass_that_changes_existing_objects_writes_its_status_first_too() -> None:
    m, p = _fresh()
    for a in p.actions:
        a.new = False
    kube = SlowKube()
    ex = Executor(cast(Kube, kube))
    ex.run(m, {"metadata": m.metadata}, p)
    ex.close()
    writes = [c for c in kube.calls if c[0] != "event"]
    assert writes[0][1] == "ModelDeployment"
    assert all(writes[0][3] <= c[2] for c in writes[1:]), "an object was written before the status"


def test_one_objects_events_are_posted_in_order() -> None:
    m, p = _fresh()
    p.actions = []
    reasons = [f"Step{i}" for i in range(6)]
    kube = SlowKube()
    ex = Executor(cast(Kube, kube))
    for r in reasons:  # six passes, one Event each: they may not overtake each other
        p.events = [Event("Normal", r, "x")]
        ex.run(m, {"metadata": m.metadata}, p)
    ex.close()
    assert [c[1] for c in kube.calls if c[0] == "event"] == reasons


QUOTA = ('deployments.apps "room-price" is forbidden: exceeded quota: q, requested: count/deployments.apps=1, '
         'used: count/deployments.apps=0, limited: count/deployments.apps=0')


def forbidden(message: str = QUOTA) -> ApiException:
    e = ApiException(status=403, reason="Forbidden")
    e.body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "reason": "Forbidden", "code": 403})
    return e


def test_a_refused_write_is_raised_with_the_servers_message_and_stops_the_pass() -> None:
    m, p = _fresh()
    for a in p.actions:
        a.new = False
    kube = SlowKube(fail_kind="Deployment", refusal=forbidden())
    with pytest.raises(ApplyFailed) as e:
        Executor(cast(Kube, kube)).execute(m, p)
    assert e.value.message == f"apply Deployment ml/room-price: 403 Forbidden: {QUOTA}"
    assert [c[1] for c in kube.calls] == ["Deployment"]  # nothing after the refused write


def test_a_refused_create_says_create_and_a_body_without_a_status_still_gives_the_reason() -> None:
    m, p = _fresh()
    e = ApiException(status=500, reason="Internal Server Error")
    with pytest.raises(ApplyFailed, match=r"^create Deployment ml/room-price: 500 Internal Server Error$"):
        Executor(cast(Kube, SlowKube(fail_kind="Deployment", refusal=e))).execute(m, p, background_creates=False)


def test_a_refused_pass_keeps_its_status_write_and_posts_only_the_events_of_what_happened() -> None:
    m, p = _fresh()
    p.events.append(Event("Warning", "ApplyFailed", "earlier refusal"))
    assert [e.reason for e in p.events if e.of_writes] == ["Created"]
    kube = SlowKube(fail_kind="Deployment", refusal=forbidden())
    ex = Executor(cast(Kube, kube))
    with pytest.raises(ApplyFailed) as e:
        ex.run(m, {"metadata": m.metadata}, p)
    ex.close()
    assert e.value.status_rv == "7"  # the status write went through: its watch event is ours
    posted = [c[1] for c in kube.calls if c[0] == "event"]
    assert "Created" not in posted and "ApplyFailed" in posted


def test_a_background_create_refused_reports_the_servers_message() -> None:
    m, p = _fresh()
    retried: list[str] = []
    ex = Executor(cast(Kube, SlowKube(fail_kind="Service", refusal=forbidden("services is forbidden: quota"))),
                  on_create_failed=lambda ns, name, msg: retried.append(msg))
    ex.execute(m, p)
    ex.close()
    assert retried == ["create Service ml/room-price: 403 Forbidden: services is forbidden: quota"]


def test_retrying_waits_for_every_create() -> None:
    m, p = _fresh()
    kube = SlowKube(fail_kind="Service", refusal=forbidden("services is forbidden: quota"))
    ex = Executor(cast(Kube, kube))
    with pytest.raises(ApplyFailed, match="services is forbidden"):  # the pass fails as a whole
        ex.execute(m, p, background_creates=False)
    ex.close()
    assert [c[1] for c in kube.calls] == ["Deployment", "Service"] and not kube.cached


def test_an_event_refused_by_a_terminating_namespace_is_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A namespace being deleted refuses Events (403 NamespaceTerminating): expected, not a permission problem;
    any other refusal is a warning naming the Event and the object."""
    import logging

    class Refusing(Kube):
        def __init__(self, body: str) -> None:
            super().__init__(cast(Any, None))
            self.body = body

        def _call(self, *args: Any, **kwargs: Any) -> Any:
            e = ApiException(status=403, reason="Forbidden")
            e.body = self.body
            raise e

    owner = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
             "metadata": {"name": "price", "namespace": "ml", "uid": "u"}}
    with caplog.at_level(logging.DEBUG, logger="modeldeploy.k8s"):
        Refusing('{"reason": "Forbidden", "details": {"causes": [{"reason": "NamespaceTerminating"}]}}').event(
            owner, "Normal", "PhaseProgressing", "m")
        assert [r.levelno for r in caplog.records] == [logging.DEBUG]
        caplog.clear()
        Refusing('{"reason": "Forbidden", "message": "events is forbidden: User cannot create"}').event(
            owner, "Normal", "PhaseProgressing", "m")
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        assert "PhaseProgressing on ml/price: Forbidden" in caplog.records[0].getMessage()
