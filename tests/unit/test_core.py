"""The controller's memory of a refused child write: set by a refusal, seeded from the status after a
restart, cleared (with a reconcile at once) by the first pass that writes everything."""

from __future__ import annotations

from typing import Any, cast

import pytest

from modeldeploy.config import Settings
from modeldeploy.controller import Controller
from modeldeploy.controller.executor import ApplyFailed
from modeldeploy.k8s import Kube
from modeldeploy.reconcile import Observed, Plan, plan
from tests.unit.helpers import md
from tests.unit.test_reconcile import NOW, QUOTA, md_with_status

KEY = ("ml", "room-price")


class Executor:
    """Stands in for the executor: refuses while `refusal` is set, records how each pass ran."""

    def __init__(self) -> None:
        self.refusal: str | None = None
        self.background: list[bool] = []

    def run(self, md: Any, body: dict, p: Plan, background_creates: bool = True) -> str | None:
        self.background.append(background_creates)
        if self.refusal:
            raise ApplyFailed(self.refusal, status_rv="8")
        return "9"


class NoKube:
    def forget_names(self, namespace: str, names: set[str]) -> None:
        pass


def controller() -> tuple[Controller, Executor]:
    c = Controller(cast(Kube, NoKube()), Settings(workers=1))
    ex = Executor()
    c.executor = ex  # type: ignore[assignment]
    return c, ex


def test_a_refusal_is_remembered_and_the_next_success_asks_for_a_reconcile_at_once() -> None:
    c, ex = controller()
    m = md(rollout={"strategy": "Rolling"})
    p = plan(m, Observed(), NOW)
    assert c._apply_error(KEY, m) is None
    ex.refusal = QUOTA
    with pytest.raises(ApplyFailed):
        c._execute(KEY, m, {}, p, retrying=False)
    assert c.apply_errors[KEY] == QUOTA and c.own_writes[KEY] == "8"  # the status write's echo is ours
    ex.refusal = None
    assert c._execute(KEY, m, {}, p, retrying=True) is True  # recovered: plan again now to clear Degraded
    assert c.apply_errors[KEY] is None and c.own_writes[KEY] == "9"
    assert c._execute(KEY, m, {}, p, retrying=False) is False
    assert ex.background == [True, False, True]  # a retry waits for its creates


def test_a_restarted_controller_starts_from_what_the_status_reported() -> None:
    c, _ = controller()
    m = md(rollout={"strategy": "Rolling"})
    reported = md_with_status(m, plan(m, Observed(apply_error=QUOTA), NOW))
    assert c._apply_error(KEY, reported) == QUOTA
    c.forget(*KEY)
    assert KEY not in c.apply_errors
