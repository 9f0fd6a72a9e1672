"""The executor: a new object's independent children are created at once, everything else in plan order."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from modeldeploy.controller.executor import Executor, concurrent_creates
from modeldeploy.k8s import Kube
from modeldeploy.reconcile import Observed, plan
from tests.unit.helpers import md

NOW = datetime(2026, 1, 1, tzinfo=UTC)

DELAY = 0.3  # each write "takes" this long, as a loaded API server's answer does


class SlowKube:
    """Records writes; each takes DELAY. No server: the executor's own ordering is what is tested."""

    def __init__(self, fail_kind: str = "") -> None:
        self.fail_kind = fail_kind
        self.calls: list[tuple[str, str, float, float]] = []
        self.lock = threading.Lock()

    def _write(self, verb: str, kind: str) -> dict[str, Any]:
        t0 = time.monotonic()
        time.sleep(DELAY)
        with self.lock:
            self.calls.append((verb, kind, t0, time.monotonic()))
        if kind == self.fail_kind:
            raise RuntimeError(f"{kind} refused")
        return {"metadata": {"resourceVersion": "7"}}

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self._write("apply", obj["kind"])

    def patch_merge(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._write("patch", kind)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self._write("delete", kind)


def _fresh() -> Any:
    m = md(replicas=2)  # a Deployment, a Service and a PodDisruptionBudget to create
    return m, plan(m, Observed(), NOW)


def test_a_new_objects_children_are_created_concurrently() -> None:
    m, p = _fresh()
    kinds = [a.kind for a in p.actions]
    assert kinds[:3] == ["Deployment", "Service", "PodDisruptionBudget"] and concurrent_creates(p.actions) == 3
    kube = SlowKube()
    t0 = time.monotonic()
    Executor(cast(Kube, kube)).execute(m, p)
    took = time.monotonic() - t0
    assert sorted(c[1] for c in kube.calls) == sorted(kinds)
    assert took < 2 * DELAY, f"three creates took {took:.2f} s: one after the other"


def test_updates_keep_the_plans_order() -> None:
    m, p = _fresh()
    for a in p.actions:
        a.new = False  # the same writes as updates of existing objects
    assert concurrent_creates(p.actions) == 0
    kube = SlowKube()
    Executor(cast(Kube, kube)).execute(m, p)
    assert [c[1] for c in kube.calls] == [a.kind for a in p.actions]
    assert all(a[3] <= b[2] for a, b in zip(kube.calls, kube.calls[1:], strict=False)), "writes overlapped"


def test_a_failed_create_is_raised_after_the_others_finished() -> None:
    m, p = _fresh()
    kube = SlowKube(fail_kind="Service")
    with pytest.raises(RuntimeError, match="Service refused"):
        Executor(cast(Kube, kube)).execute(m, p)
    assert sorted(c[1] for c in kube.calls) == ["Deployment", "PodDisruptionBudget", "Service"]
