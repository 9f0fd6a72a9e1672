"""Work queue timing: the earliest requested time wins, resync never undoes a backoff, events still act at once.

The queue and the controller's workers run on a real asyncio loop with a short timescale (tens of
milliseconds). Nothing sleeps for a fixed time: each test polls for what must happen within a
deadline, and asserts that something did *not* happen only after waiting for something else
that proves enough time passed (another key's resyncs).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any, cast

from modeldeploy.config import Settings
from modeldeploy.controller import Controller, Key, Result, WorkQueue
from modeldeploy.k8s import Kube

DEADLINE = 10.0  # generous: the machine may be busy; a pass takes a fraction of a second


async def until(check: Callable[[], bool], timeout: float = DEADLINE, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what or check}")
        await asyncio.sleep(0.005)


# --------------------------------------------------------------------------------------------
# the queue alone
# --------------------------------------------------------------------------------------------
def test_a_shorter_add_after_replaces_a_later_timer_and_a_later_one_never_postpones() -> None:
    async def main() -> None:
        q = WorkQueue()
        a, b = ("ns", "a"), ("ns", "b")
        t0 = time.monotonic()
        q.add_after(a, 60.0)  # e.g. the next analysis is due in a minute
        q.add_after(a, 0.05)  # then a child changed: a short debounce
        assert await asyncio.wait_for(q.get(), DEADLINE) == a
        assert time.monotonic() - t0 >= 0.04  # the delay was honoured, not skipped
        q.done(a)
        q.add_after(b, 0.05)
        q.add_after(b, 60.0)  # a later request does not move the earlier one
        assert await asyncio.wait_for(q.get(), DEADLINE) == b
        q.done(b)
        # each timer fired once: nothing else is waiting or queued
        assert len(q) == 0
        q.forget(a)
        q.forget(b)

    asyncio.run(main())


def test_add_after_for_a_queued_key_adds_nothing() -> None:
    async def main() -> None:
        q = WorkQueue()
        k = ("ns", "a")
        q.add(k)
        q.add_after(k, 0.01)
        assert await asyncio.wait_for(q.get(), DEADLINE) == k
        q.done(k)
        assert len(q) == 0

    asyncio.run(main())


# --------------------------------------------------------------------------------------------
# the controller's workers and resync loop, with a stand-in reconcile
# --------------------------------------------------------------------------------------------
class Recorder:
    """Stands in for `Controller.reconcile`: records when each key was reconciled, answers by script."""

    def __init__(self, answer: Callable[[Key, int], Result]) -> None:
        self.answer = answer
        self.times: dict[Key, list[float]] = {}

    def __call__(self, key: Key) -> Result:
        self.times.setdefault(key, []).append(time.monotonic())
        return self.answer(key, len(self.times[key]))

    def count(self, key: Key) -> int:
        return len(self.times.get(key, []))


def controller(recorder: Recorder, **settings: Any) -> Controller:
    cfg = Settings(**{"workers": 2, "resync_seconds": 3600.0, **settings})
    c = Controller(cast(Kube, object()), cfg)  # the stand-in reconcile never touches the API
    c.reconcile = recorder  # type: ignore[method-assign]
    return c


def test_a_child_event_debounce_is_not_swallowed_by_a_pending_requeue() -> None:
    key = ("ns", "md")
    rec = Recorder(lambda k, n: Result(requeue_after=60.0))  # the next analysis is due in a minute

    async def main() -> None:
        c = controller(rec)
        await c.start()
        try:
            c.enqueue(*key)
            await until(lambda: rec.count(key) == 1, what="the first reconcile")
            await until(lambda: key in c.queue._timers, what="the 60 s requeue timer")
            c.enqueue(*key, delay=0.05)  # a child Deployment changed (the handlers' debounce)
            await until(lambda: rec.count(key) == 2, what="the debounced reconcile, long before the 60 s timer")
        finally:
            await c.stop()

    asyncio.run(main())


def test_backoff_grows_to_its_maximum_while_the_resync_runs() -> None:
    key = ("ns", "broken")
    rec = Recorder(lambda k, n: Result(error=True))
    base, top = 0.05, 0.4

    async def main() -> None:
        c = controller(rec, resync_seconds=0.005, backoff_base_seconds=base, backoff_max_seconds=top)
        await c.start()
        try:
            c.enqueue(*key)
            await until(lambda: rec.count(key) >= 7, what="seven attempts")
        finally:
            await c.stop()

    asyncio.run(main())
    t = rec.times[key]
    gaps = [b - a for a, b in itertools.pairwise(t)][:6]
    expected = [min(base * 2**i, top) for i in range(6)]  # 0.05 0.1 0.2 0.4 0.4 0.4
    # Timers never fire early (a few ms of clock granularity aside); late is fine on a busy machine.
    assert all(g >= 0.9 * e for g, e in zip(gaps, expected, strict=True)), (gaps, expected)


def test_resync_skips_a_key_in_backoff_but_an_event_reconciles_it_at_once() -> None:
    broken, healthy = ("ns", "broken"), ("ns", "healthy")
    rec = Recorder(lambda k, n: Result(error=True) if k == broken else Result())

    async def main() -> None:
        # The first failure backs off for a minute; the resync runs every 10 ms.
        c = controller(rec, resync_seconds=0.01, backoff_base_seconds=60.0, backoff_max_seconds=300.0)
        await c.start()
        try:
            c.enqueue(*broken)
            c.enqueue(*healthy)
            await until(lambda: rec.count(broken) == 1, what="the first, failing reconcile")
            # Dozens of resyncs reconcile the healthy key; none may cut the broken key's backoff short.
            start = rec.count(healthy)
            await until(lambda: rec.count(healthy) >= start + 20, what="twenty resyncs of the healthy key")
            assert rec.count(broken) == 1, "a resync reconciled a key in backoff"
            # A new fact (the object changed) still reconciles at once, backoff or not.
            c.enqueue(*broken)
            await until(lambda: rec.count(broken) == 2, timeout=5.0, what="the event's reconcile")
        finally:
            await c.stop()

    asyncio.run(main())
