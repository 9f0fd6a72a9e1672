"""The work queue: each key queued at most once, never worked on by two workers at once.

Why a queue of keys instead of reconciling inside kopf handlers: events for a ModelDeployment
arrive from the object itself and from each of its children; a burst of them must collapse into
one reconcile, one object must never be reconciled by two workers at once, and a key being
worked on that gets a new event is reconciled again right after (client-go's workqueue rules).
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

    def add(self, key: Key) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)
        opmetrics.QUEUE_DEPTH.set(len(self._pending))

    def add_after(self, key: Key, delay: float) -> None:
        """Queue `key` in `delay` seconds (an earlier `add` wins and cancels this)."""
        if key in self._timers or key in self._pending:
            return
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

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
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def __len__(self) -> int:
        return len(self._pending)
