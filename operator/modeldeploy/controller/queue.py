"""The work queue: each key queued at most once, never worked on by two workers at once.

Why a queue of keys instead of reconciling inside kopf handlers: events for a ModelDeployment
arrive from the object itself and from each of its children; a burst of them must collapse into
one reconcile, one object must never be reconciled by two workers at once, and a key being
worked on that gets a new event is reconciled again right after (client-go's workqueue rules).

Timing rules, because three sources ask for reconciles at different times:
- `add` is a new fact (the object or a child changed, this replica became leader): at once.
- `add_after` is a request for a later reconcile (a debounce, the next analysis, a backoff): a key
  has at most one timer and the earliest requested time wins, so a 0.25 s child debounce is never
  swallowed by a pending 30 s analysis timer, and a later request never postpones an earlier one.
- `resync` is the periodic safety net: it queues keys that are neither queued, being worked on,
  nor backing off, and never touches a timer, so the exponential backoff reaches its maximum.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from modeldeploy import opmetrics

Key = tuple[str, str]  # (namespace, name)


@dataclass
class WorkQueue:
    """Keys to reconcile. A key is queued at most once; a key being worked on is re-queued after."""

    _queue: asyncio.Queue[Key] = field(default_factory=asyncio.Queue)
    _pending: set[Key] = field(default_factory=set)
    _active: set[Key] = field(default_factory=set)
    _dirty: set[Key] = field(default_factory=set)
    _timers: dict[Key, asyncio.TimerHandle] = field(default_factory=dict)
    _backoff: set[Key] = field(default_factory=set)  # keys whose retry is held by a backoff timer

    def add(self, key: Key) -> None:
        """Queue `key` now (a new fact): cancels its timer, backoff included."""
        self._cancel_timer(key)
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)
        opmetrics.QUEUE_DEPTH.set(len(self._pending))

    def add_after(self, key: Key, delay: float) -> None:
        """Queue `key` in `delay` seconds, unless it is queued already or its timer fires sooner."""
        if key in self._pending:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + max(delay, 0.0)
        timer = self._timers.get(key)
        if timer is not None:
            if timer.when() <= when:
                return  # the earlier request stands
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def add_backoff(self, key: Key, delay: float) -> None:
        """`add_after` for a retry after a failure: until its timer fires, `resync` leaves the key alone."""
        self.add_after(key, delay)
        if key in self._timers:
            self._backoff.add(key)

    def resync(self, key: Key) -> None:
        """The periodic resync's request: queue `key` unless it is queued, being worked on or backing off."""
        if key in self._backoff or key in self._active or key in self._pending:
            return
        self._pending.add(key)
        self._queue.put_nowait(key)
        opmetrics.QUEUE_DEPTH.set(len(self._pending))

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self._backoff.discard(key)
        self.add(key)

    def _cancel_timer(self, key: Key) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._backoff.discard(key)

    async def get(self) -> Key:
        key = await self._queue.get()
        self._pending.discard(key)
        self._active.add(key)
        opmetrics.QUEUE_DEPTH.set(len(self._pending))
        return key

    def done(self, key: Key) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def forget(self, key: Key) -> None:
        self._cancel_timer(key)

    def __len__(self) -> int:
        return len(self._pending)
