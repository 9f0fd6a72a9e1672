"""Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics.

Why: with more than one replica (an operator rolling update always has two for a moment) exactly
one may reconcile, or two replicas run the same analysis and both count it. kopf peering plus a
poll could not promise that: its keep-alives are not a lease, and a replica only noticed it had
lost its place seconds later. A Lease updated with `resourceVersion` can be won by one candidate
only, and a leader that cannot renew steps down *before* anyone else is allowed to acquire.

The rules, as in client-go's `leaderelection` package:
- The Lease records `holderIdentity`, `leaseDurationSeconds`, `acquireTime`, `renewTime` and
  `leaseTransitions`. A candidate takes it only when it is free (no holder: released) or expired;
  every write is a create (fails if it exists) or an update carrying the `resourceVersion` it
  read (fails if anyone wrote since), so two candidates cannot both win.
- "Expired" is judged on the candidate's own monotonic clock: `leaseDurationSeconds` after it last
  *saw the record change*, never by comparing another machine's `renewTime` with ours (clock skew).
- The leader renews every retry period. It stops working once it has not renewed for the renew
  deadline (`is_leader()` turns false by the clock alone, even while a request hangs); the deadline
  is shorter than the lease duration, so it has stood down before any other replica may acquire.
- On a clean shutdown the leader releases the Lease (empty holder), so a standby takes over on its
  next attempt instead of waiting for the lease to expire.

The elector only keeps the answer to "am I the leader?" current and calls back when it changes;
`core.Controller` decides what that means for its workers, resync and queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.rest import ApiException

from modeldeploy import opmetrics
from modeldeploy.config import Settings
from modeldeploy.k8s import Kube

log = logging.getLogger(__name__)

JITTER = 0.2  # a standby's retries are spread over [retry, retry * 1.2] (client-go's JitterFactor)


def _microtime(t: datetime) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds)."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseConfig:
    name: str
    namespace: str
    identity: str
    lease_duration: float
    renew_deadline: float
    retry_period: float

    @classmethod
    def from_settings(cls, s: Settings) -> LeaseConfig:
        cfg = cls(name=s.lease_name, namespace=s.lease_namespace, identity=s.lease_identity,
                  lease_duration=s.lease_duration_seconds, renew_deadline=s.lease_renew_deadline_seconds,
                  retry_period=s.lease_retry_period_seconds)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not self.name:
            raise ValueError("leader election needs a Lease name (MODELDEPLOY_LEASE_NAME)")
        if not self.namespace:
            raise ValueError("leader election needs the Lease's namespace: set MODELDEPLOY_LEASE_NAMESPACE "
                             "(the Helm chart sets it to the release namespace)")
        if not self.identity:
            raise ValueError("leader election needs a non-empty identity (MODELDEPLOY_LEASE_IDENTITY)")
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(f"the lease duration ({self.lease_duration}s) must be longer than the renew deadline "
                             f"({self.renew_deadline}s), or a leader could still work after another acquired")
        if not self.renew_deadline > (1 + JITTER) * self.retry_period > 0:
            raise ValueError(f"the renew deadline ({self.renew_deadline}s) must be longer than "
                             f"{1 + JITTER} x the retry period ({self.retry_period}s)")


def _noop() -> None:
    pass


class LeaderElector:
    """Competes for the Lease in a background task; `is_leader()` is the answer at this instant."""

    def __init__(self, kube: Kube, cfg: LeaseConfig, on_started_leading: Callable[[], None] = _noop,
                 on_stopped_leading: Callable[[], None] = _noop) -> None:
        self.kube = kube
        self.cfg = cfg
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self._leading = False  # what the callbacks were last told
        self._renewed_at = float("-inf")  # monotonic time the last successful acquire/renew *started*
        self._observed: dict[str, Any] | None = None  # the Lease as last read or written
        self._observed_record = ""  # its spec, to notice changes
        self._observed_at = float("-inf")  # monotonic time the record was last seen to change
        # One thread: attempts never overlap (a timed-out one finishes before the next starts).
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")
        self._task: asyncio.Task[None] | None = None

    # -- the answer --------------------------------------------------------------------------------
    def is_leader(self) -> bool:
        return self._leading and time.monotonic() - self._renewed_at < self.cfg.renew_deadline

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self, release: bool = True) -> None:
        """Stop competing; as the leader, hand the Lease back (`release`) so a standby takes over at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if release and self.is_leader():
            loop = asyncio.get_running_loop()
            try:
                timeout = self.cfg.retry_period
                await asyncio.wait_for(loop.run_in_executor(self._pool, self._release, timeout), timeout)
            except Exception as e:  # the lease then expires on its own
                log.warning("leader election: could not release Lease %s/%s: %s", self.cfg.namespace,
                            self.cfg.name, e)
        self._step_down("shutting down")
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the loop ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        log.info("leader election: %s competing for Lease %s/%s", self.cfg.identity, self.cfg.namespace,
                 self.cfg.name)
        while True:
            started = time.monotonic()
            # As the leader, an attempt may take only until the renew deadline; a standby's, one deadline.
            timeout = max(0.05, self.cfg.renew_deadline - (started - self._renewed_at)) if self._leading \
                else self.cfg.renew_deadline
            try:
                ok = await asyncio.wait_for(loop.run_in_executor(self._pool, self._try_acquire_or_renew, timeout),
                                            timeout)
            except Exception as e:  # TimeoutError or an API error: not renewed this time
                log.warning("leader election: Lease %s/%s not %s: %s", self.cfg.namespace, self.cfg.name,
                            "renewed" if self._leading else "acquired", e or type(e).__name__)
                ok = False
            if ok:
                if self._leading and time.monotonic() - self._renewed_at >= self.cfg.renew_deadline:
                    # Renewed, but too late: the workers stood still for a moment; start over as a new leader.
                    self._step_down("renewed after the renew deadline")
                self._renewed_at = started
                if not self._leading:
                    self._leading = True
                    opmetrics.LEADER.set(1)
                    log.info("leader election: %s is the leader (Lease %s/%s)", self.cfg.identity,
                             self.cfg.namespace, self.cfg.name)
                    self.on_started_leading()
            elif self._leading and time.monotonic() - self._renewed_at >= self.cfg.renew_deadline:
                self._step_down(f"could not renew within {self.cfg.renew_deadline}s")
            await asyncio.sleep(self._next_delay())

    def _step_down(self, why: str) -> None:
        if not self._leading:
            return
        self._leading = False
        opmetrics.LEADER.set(0)
        log.warning("leader election: %s stopped leading: %s", self.cfg.identity, why)
        self.on_stopped_leading()

    def _next_delay(self) -> float:
        if self._leading:
            return self.cfg.retry_period
        delay = self.cfg.retry_period * (1 + JITTER * random.random())
        spec = (self._observed or {}).get("spec") or {}
        if spec.get("holderIdentity") and spec.get("holderIdentity") != self.cfg.identity:
            # Held by another: try again right when it would expire, not up to a retry period after.
            expires_in = self._expires_at(spec) - time.monotonic()
            delay = min(delay, max(0.0, expires_in) + 0.05)
        return delay

    # -- one attempt (in the elector's thread) -------------------------------------------------------
    def _expires_at(self, spec: dict[str, Any]) -> float:
        return self._observed_at + float(spec.get("leaseDurationSeconds") or self.cfg.lease_duration)

    def _observe(self, lease: dict[str, Any]) -> None:
        record = json.dumps(lease.get("spec") or {}, sort_keys=True)
        if record != self._observed_record:
            self._observed_record = record
            self._observed_at = time.monotonic()
        self._observed = lease

    def _spec(self, now: datetime, acquired: str, transitions: int) -> dict[str, Any]:
        return {"holderIdentity": self.cfg.identity, "leaseDurationSeconds": math.ceil(self.cfg.lease_duration),
                "acquireTime": acquired, "renewTime": _microtime(now), "leaseTransitions": transitions}

    def _try_acquire_or_renew(self, timeout: float) -> bool:
        cfg = self.cfg
        now = datetime.now(UTC)
        lease = self.kube.get_lease(cfg.namespace, cfg.name, timeout=timeout)
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                    "spec": self._spec(now, _microtime(now), 0)}
            try:
                self._observe(self.kube.create_lease(body, timeout=timeout))
            except ApiException as e:
                if e.status == 409:
                    return False  # another candidate created it first
                raise
            return True
        self._observe(lease)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        if holder and holder != cfg.identity and time.monotonic() < self._expires_at(spec):
            return False  # held, and not expired
        if holder == cfg.identity:
            new = self._spec(now, spec.get("acquireTime") or _microtime(now), int(spec.get("leaseTransitions") or 0))
        else:
            new = self._spec(now, _microtime(now), int(spec.get("leaseTransitions") or 0) + 1)
        body = {**lease, "spec": new}  # metadata carries the resourceVersion we read
        try:
            self._observe(self.kube.update_lease(body, timeout=timeout))
        except ApiException as e:
            if e.status == 409:
                return False  # someone wrote it since we read it: they won this round
            raise
        if holder != cfg.identity:
            log.info("leader election: %s acquired Lease %s/%s from %r", cfg.identity, cfg.namespace, cfg.name,
                     holder)
        return True

    def _release(self, timeout: float) -> None:
        lease = self._observed
        spec = (lease or {}).get("spec") or {}
        if lease is None or spec.get("holderIdentity") != self.cfg.identity:
            return
        now = _microtime(datetime.now(UTC))
        body = {**lease, "spec": {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": now,
                                  "renewTime": now, "leaseTransitions": int(spec.get("leaseTransitions") or 0)}}
        try:
            self._observe(self.kube.update_lease(body, timeout=timeout))
        except ApiException as e:
            if e.status == 409:
                return  # written since our last renewal: not ours to release any more
            raise
        log.info("leader election: %s released Lease %s/%s", self.cfg.identity, self.cfg.namespace, self.cfg.name)
