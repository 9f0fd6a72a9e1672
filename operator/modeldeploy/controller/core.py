"""The controller: event intake, workers, and one reconcile = observe -> measure -> plan -> execute.

kopf stays the event source (watch streams, reconnects; standalone on every replica, so a
standby's cache is warm when it takes over); this module decides *when* to reconcile (the work
queue, resyncs, backoff, whether this replica is the leader); `reconcile.plan` decides *what* to
do; the collaborators do the I/O, each found in one hop:

    queue.WorkQueue ........ dedup, delays, one worker per key
    leader.LeaderElector ... the coordination.k8s.io Lease: which replica works
    observe.Observer ....... what the cluster holds (cached reads)
    cards.CardReader ....... the revisions' model cards, read once from a ready pod each
    analysis.AnalysisRunner  metric queries when the engine says a measurement is due
    executor.Executor ...... status, objects, Events, metrics, as the plan says
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from modeldeploy import KIND, opmetrics
from modeldeploy.api import ModelDeployment, Phase
from modeldeploy.config import Settings
from modeldeploy.controller.analysis import AnalysisRunner
from modeldeploy.controller.cards import CardReader
from modeldeploy.controller.executor import ApplyFailed, Executor, NameTaken
from modeldeploy.controller.leader import LeaderElector, LeaseConfig
from modeldeploy.controller.observe import Observer
from modeldeploy.controller.queue import Key, WorkQueue
from modeldeploy.k8s import Conflict, Kube
from modeldeploy.reconcile import Plan, plan, previous_apply_error, view_of
from modeldeploy.resources.common import child_names

log = logging.getLogger(__name__)

# Threads reading model cards from pods (each read at most ~2 x cards.TIMEOUT_SECONDS).
CARD_READERS = 4


@dataclass
class Result:
    requeue_after: float | None = None  # seconds; None = only on the next event or resync
    error: bool = False                 # an exception: retry with exponential backoff
    backoff: bool = False               # a name conflict: retry with exponential backoff
    problem: bool = False               # a missing reference: look again when the plan says (not backed off)
    conflict: bool = False              # our status write lost to a newer version: re-read and retry now


class Controller:
    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.settings = settings
        self.analysis = AnalysisRunner(kube, settings.prometheus_allowed_addresses)
        self.observer = Observer(kube, checks=[self.analysis.problems])
        # Model cards are read in a pool of their own (controller/cards.py); a read queues a reconcile.
        self._card_pool = ThreadPoolExecutor(max_workers=CARD_READERS, thread_name_prefix="cards")
        self.cards = CardReader(kube, pool=self._card_pool, on_read=self._card_read)
        self.executor = Executor(kube, workers=settings.workers, on_create_failed=self._create_failed)
        self.queue = WorkQueue()
        self.known: set[Key] = set()
        self.failures: dict[Key, int] = {}
        # The API server's refusal of each object's last child write (None: the last pass wrote them all);
        # a key not in it has not been worked on by this process yet (see `_apply_error`).
        self.apply_errors: dict[Key, str | None] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="reconcile")
        self.started = False
        # resourceVersion of our own last write per object: its watch event needs no reconcile.
        self.own_writes: dict[Key, str] = {}
        # With leader election only the Lease holder reconciles; without it this replica always does.
        self.elector: LeaderElector | None = None
        if settings.leader_election:
            self.elector = LeaderElector(kube, LeaseConfig.from_settings(settings),
                                         on_started_leading=self._started_leading,
                                         on_stopped_leading=self._stopped_leading)
        opmetrics.LEADER.set(0 if self.elector else 1)

    # -- event intake (called from kopf handlers, on the event loop) ----------------------------
    def enqueue(self, namespace: str, name: str, resource_version: str | None = None, delay: float = 0.0) -> None:
        """Queue a reconcile, unless the event is only the echo of our own last write."""
        key = (namespace, name)
        if resource_version is not None and self.own_writes.get(key) == resource_version:
            return
        self.known.add(key)
        opmetrics.MANAGED.set(len(self.known))
        if delay > 0:
            self.queue.add_after(key, delay)
        else:
            self.queue.add(key)

    def _create_failed(self, namespace: str, name: str, message: str) -> None:
        """A child create the executor did not wait for failed (in a thread): remember the server's message
        (the next plan reports it) and retry the owner, backing off."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._retry_failed_create, (namespace, name), message)

    def _card_read(self, namespace: str, name: str) -> None:
        """A model card was read (in the card pool's thread): reconcile its object to record it."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._reconcile_if_known, (namespace, name))

    def _reconcile_if_known(self, key: Key) -> None:
        if key in self.known:
            self.queue.add(key)

    def _retry_failed_create(self, key: Key, message: str) -> None:
        if key not in self.known:
            return  # deleted meanwhile
        if message:
            self.apply_errors[key] = message
        self.queue.add_backoff(key, self._backoff(key))

    def _backoff(self, key: Key) -> float:
        """Count one more failure of `key`; the delay before its retry: doubling from base, capped at max."""
        n = self.failures.get(key, 0) + 1
        self.failures[key] = n
        return float(min(self.settings.backoff_base_seconds * 2 ** (n - 1), self.settings.backoff_max_seconds))

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self.known.discard(key)
        self.own_writes.pop(key, None)
        self.kube.forget_names(namespace, child_names(name))
        self.failures.pop(key, None)
        self.apply_errors.pop(key, None)
        self.analysis.forget(key)
        self.cards.forget(namespace, name)
        self.queue.forget(key)
        opmetrics.MANAGED.set(len(self.known))
        for phase in Phase:
            with contextlib.suppress(KeyError):  # never exported for this object
                opmetrics.PHASE.remove(namespace, name, phase.value)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.settings.workers)]
        self._tasks.append(asyncio.create_task(self._resync()))
        if self.elector is not None:
            await self.elector.start()
        self.started = True

    async def stop(self) -> None:
        """Stop working, let in-flight reconciles finish, then hand the Lease to a standby."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # In a thread: the elector keeps renewing while the last reconciles finish, and only then
        # releases, so the successor never overlaps with a write of ours.
        await asyncio.get_running_loop().run_in_executor(None, self._finish_work)
        if self.elector is not None:
            await self.elector.stop(release=True)
        self.started = False

    def _finish_work(self) -> None:
        self._card_pool.shutdown(wait=False, cancel_futures=True)  # a card read in flight is only lost
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.executor.close()

    # -- leadership --------------------------------------------------------------------------------
    def is_leader(self) -> bool:
        return self.elector is None or self.elector.is_leader()

    def _started_leading(self) -> None:
        """A new leader knows nothing of what the old one had queued: reconcile everything known."""
        log.info("leader: reconciling all %d known ModelDeployments", len(self.known))
        for key in list(self.known):
            self.queue.add(key)

    def _stopped_leading(self) -> None:
        log.warning("leader: standing by; queued keys are dropped until this replica leads again")

    # -- when to reconcile -------------------------------------------------------------------------
    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            if not self.is_leader():
                continue
            for key in list(self.known):
                self.queue.resync(key)  # never cuts a backoff short

    async def _worker(self, _: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            key = await self.queue.get()
            if not self.is_leader():  # standing by: the leader handles it
                self.queue.done(key)
                continue
            try:
                result = await loop.run_in_executor(self._pool, self.reconcile, key)
            finally:
                self.queue.done(key)
            if result.conflict:  # someone else wrote first: not a failure, try again at once on fresh data
                self.queue.add(key)
                continue
            if result.error or result.backoff:
                self.queue.add_backoff(key, self._backoff(key))
                continue
            self.failures.pop(key, None)
            if result.requeue_after is not None:  # e.g. the next canary analysis is due then
                self.queue.add_after(key, result.requeue_after)

    # -- one reconcile (in a worker thread) ------------------------------------------------------
    def reconcile(self, key: Key) -> Result:
        t0 = time.perf_counter()
        if not self.is_leader():  # lost the Lease while this waited for a thread
            return Result()
        try:
            result = self._reconcile(key)
            opmetrics.RECONCILES.labels("backoff" if result.backoff or result.problem else "ok").inc()
            return result
        except Conflict as e:
            # Our status write was based on an old read (another replica, or a user, wrote since):
            # nothing after it was written. Drop the cached copy so the retry reads the server's,
            # and the probe pacing, so the measurement that was not recorded is taken again.
            self.kube.forget(KIND, *key)
            self.analysis.forget(key)
            opmetrics.RECONCILES.labels("conflict").inc()
            log.info("reconcile %s/%s: %s; retrying on a fresh read", *key, e)
            return Result(conflict=True)
        except ApplyFailed as e:
            opmetrics.RECONCILES.labels("error").inc()
            opmetrics.RECONCILE_ERRORS.labels("ApplyFailed").inc()
            log.warning("reconcile %s/%s: %s", *key, e.message)
            return Result(error=True)  # the next pass reports it (Degraded, ApplyFailed), after a backoff
        except NameTaken as e:
            # The object is now in the cache: the next plan sees it and reports the NameConflict.
            opmetrics.RECONCILES.labels("conflict").inc()
            log.info("reconcile %s/%s: %s; planning again", *key, e)
            return Result(conflict=True)
        except ApiException as e:
            if e.status == 403 and "NamespaceTerminating" in str(e.body):
                opmetrics.RECONCILES.labels("ok").inc()
                return Result()  # the namespace is going away, and this object with it
            opmetrics.RECONCILES.labels("error").inc()
            opmetrics.RECONCILE_ERRORS.labels(f"ApiException{e.status}").inc()
            log.warning("reconcile %s/%s: API error %s %s: %s", *key, e.status, e.reason, str(e.body)[:500])
            return Result(error=True)
        except Exception as e:  # never let one object take the loop down; back off and retry
            opmetrics.RECONCILES.labels("error").inc()
            opmetrics.RECONCILE_ERRORS.labels(type(e).__name__).inc()
            log.exception("reconcile %s/%s failed", *key)
            return Result(error=True)
        finally:
            opmetrics.RECONCILE_DURATION.observe(time.perf_counter() - t0)

    def _apply_error(self, key: Key, md: ModelDeployment) -> str | None:
        """The refusal the next plan reports: this process's memory, or on its first pass for `key`
        what the status last said (a restart neither clears the condition early nor repeats its Event)."""
        if key not in self.apply_errors:
            self.apply_errors[key] = previous_apply_error(md.status)
        return self.apply_errors[key]

    def _execute(self, key: Key, md: ModelDeployment, body: dict, p: Plan, retrying: bool) -> bool:
        """Run the plan, remembering a refused child write (raised on); True when this pass wrote what an
        earlier one could not. `retrying`: creates are waited for, so the pass fails or succeeds as a whole."""
        try:
            written = self.executor.run(md, body, p, background_creates=not retrying)
        except ApplyFailed as e:
            if e.status_rv:
                self.own_writes[key] = e.status_rv  # its watch event is still only our own write
            self.apply_errors[key] = e.message
            raise
        if written is not None:
            self.own_writes[key] = written
        recovered = self.apply_errors.get(key) is not None
        self.apply_errors[key] = None
        return recovered

    def _reconcile(self, key: Key) -> Result:
        namespace, name = key
        body = self.kube.get(KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return Result()  # gone or going: owner references let the GC remove the children
        try:
            md = ModelDeployment.model_validate(body)
        except ValidationError as e:
            # The CRD schema should make this impossible; if it happens, say so and do nothing.
            msg = f"spec does not match the operator's model: {e.errors()[0]['msg']} at " \
                  f"{'.'.join(str(x) for x in e.errors()[0]['loc'])}"
            self.executor.degrade_invalid(body, msg)
            return Result(backoff=True)

        observed = self.observer.observe(md)
        observed.last_probe_at = self.analysis.last_probe.get(key)
        observed.apply_error = self._apply_error(key, md)
        observed.cards = self.cards.cards(md, observed)
        now = datetime.now(UTC).replace(microsecond=0)
        analysis = self.analysis.measure(key, md, view_of(md, observed), now)
        p = plan(md, observed, now, analysis)
        recovered = self._execute(key, md, body, p, retrying=bool(observed.apply_error or self.failures.get(key)))
        for kind, child in p.conflicts:  # someone else's: not watched, so read it again before the retry
            self.kube.forget(kind, namespace, child)
        if recovered:
            return Result(requeue_after=0)  # wrote what failed before: plan again now, to clear Degraded
        if p.conflicts:
            return Result(requeue_after=self.settings.backoff_base_seconds, backoff=True)
        if observed.problems:  # not backed off: the plan says when to look again (reconcile.reference_recheck)
            return Result(requeue_after=p.requeue_after, problem=True)
        if p.requeue_after is not None:
            return Result(requeue_after=p.requeue_after)
        return Result()
