"""The reconcile loop: a deduplicating work queue fed by kopf events, drained by worker threads.

Why a queue of keys instead of reconciling inside kopf handlers: events for a ModelDeployment
arrive from the object itself and from each of its children; a burst of them must collapse
into one reconcile, one object must never be reconciled by two workers at once, and failures
must back off exponentially (bounded) instead of retrying hot. kopf stays the event source
(watch streams, reconnects, peering); this module decides when to reconcile; `reconcile.plan`
decides what to do; `k8s.Kube` does it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from modeldeploy import KIND
from modeldeploy import metrics as opmetrics
from modeldeploy.api import ModelDeployment, Phase
from modeldeploy.config import Settings
from modeldeploy.k8s import Kube, now_rfc3339
from modeldeploy.reconcile import Observed, plan, status_changed
from modeldeploy.resources.common import deployment_name

log = logging.getLogger(__name__)

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


@dataclass
class Result:
    requeue_after: float | None = None  # seconds; None = only on the next event or resync
    error: bool = False


class Controller:
    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.settings = settings
        self.queue = WorkQueue()
        self.known: set[Key] = set()
        self.failures: dict[Key, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="reconcile")
        self.started = False

    # -- event intake (called from kopf handlers, on the event loop) ----------------------------
    def enqueue(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self.known.add(key)
        opmetrics.MANAGED.set(len(self.known))
        self.queue.add(key)

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self.known.discard(key)
        self.failures.pop(key, None)
        self.queue.forget(key)
        opmetrics.MANAGED.set(len(self.known))
        for phase in Phase:
            opmetrics.PHASE.remove(namespace, name, phase.value) if _has_phase(namespace, name, phase) else None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.settings.workers)]
        self._tasks.append(asyncio.create_task(self._resync()))
        self.started = True

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.started = False

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            for key in list(self.known):
                self.queue.add(key)

    async def _worker(self, _: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            key = await self.queue.get()
            try:
                result = await loop.run_in_executor(self._pool, self.reconcile, key)
            finally:
                self.queue.done(key)
            if result.error or result.requeue_after is not None:
                n = self.failures.get(key, 0) + 1
                self.failures[key] = n
                delay = min(self.settings.backoff_base_seconds * 2 ** (n - 1), self.settings.backoff_max_seconds)
                if result.requeue_after is not None and not result.error:
                    delay = max(delay, result.requeue_after)
                self.queue.add_after(key, delay)
            else:
                self.failures.pop(key, None)

    # -- one reconcile (in a worker thread) ------------------------------------------------------
    def reconcile(self, key: Key) -> Result:
        t0 = time.perf_counter()
        try:
            result = self._reconcile(key)
            opmetrics.RECONCILES.labels("requeue" if result.requeue_after else "ok").inc()
            return result
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
            self._degrade_invalid(body, msg)
            return Result(requeue_after=self.settings.backoff_max_seconds)

        observed = self.observe(md)
        p = plan(md, observed, now_rfc3339())
        absent = {("Deployment", deployment_name(md, "stable")): observed.stable is None,
                  ("Service", md.name): observed.service is None,
                  ("HorizontalPodAutoscaler", md.name): observed.hpa is None,
                  ("PodDisruptionBudget", md.name): observed.pdb is None}
        for action in p.actions:
            if action.verb == "apply":
                assert action.body is not None
                self.kube.apply(action.body)
                verb = "Created" if absent.get((action.kind, action.name), True) else "Updated"
                log.info("%s/%s: %s %s %s", namespace, name, verb.lower(), action.kind, action.name)
                if verb == "Created" or action.kind == "Deployment":
                    self.kube.event(body, "Normal", f"{verb}{action.kind}", f"{verb.lower()} {action.kind} "
                                    f"{action.name}" + ("" if verb == "Created" else " to match the spec"))
            else:
                self.kube.delete(action.kind, namespace, action.name)
                log.info("%s/%s: deleted %s %s", namespace, name, action.kind, action.name)
        if status_changed(md.status, p.status):
            log.info("%s/%s: status %s -> %s: %s", namespace, name, md.status.phase.value, p.status.phase.value,
                     p.status.message)
            log.debug("%s/%s: old status %s", namespace, name, md.status.model_dump(mode="json"))
            self.kube.patch_status(namespace, name, p.status.model_dump(by_alias=True, mode="json"))
        for ev in p.events:
            self.kube.event(body, ev.type, ev.reason, ev.message)
        for phase in Phase:
            opmetrics.PHASE.labels(namespace, name, phase.value).set(1 if phase == p.status.phase else 0)
        opmetrics.CANARY_WEIGHT.labels(namespace, name).set(p.status.canary_weight)
        if observed.problems:
            return Result(requeue_after=self.settings.backoff_base_seconds)
        return Result()

    def observe(self, md: ModelDeployment) -> Observed:
        ns = md.namespace
        get = self.kube.get
        return Observed(
            stable=get("Deployment", ns, deployment_name(md, "stable")),
            canary=get("Deployment", ns, deployment_name(md, "canary")),
            service=get("Service", ns, md.name),
            hpa=get("HorizontalPodAutoscaler", ns, md.name),
            pdb=get("PodDisruptionBudget", ns, md.name),
            problems=list(self.check_references(md)),
        )

    def check_references(self, md: ModelDeployment) -> Iterable[str]:
        """Semantic checks the schema cannot make: do referenced Secrets/ConfigMaps/accounts exist?"""
        ns, m = md.namespace, md.spec.model
        cache: dict[tuple[str, str], dict | None] = {}

        def fetch(kind: str, name: str) -> dict | None:
            if (kind, name) not in cache:
                cache[(kind, name)] = self.kube.get(kind, ns, name)
            return cache[(kind, name)]

        for env in m.env:
            src = env.value_from
            if src is None:
                continue
            ref, kind = (src.secret_key_ref, "Secret") if src.secret_key_ref else (src.config_map_key_ref,
                                                                                    "ConfigMap")
            if ref is None or ref.optional:
                continue
            obj = fetch(kind, ref.name)
            if obj is None:
                yield (f"{kind} {ref.name!r} (spec.model.env {env.name}) does not exist in namespace {ns!r}: "
                       f"create it or mark the reference optional")
            elif ref.key not in (obj.get("data") or {}) and ref.key not in (obj.get("stringData") or {}):
                yield f"{kind} {ref.name!r} has no key {ref.key!r} (spec.model.env {env.name})"
        for secret in m.image_pull_secrets:
            if fetch("Secret", secret) is None:
                yield (f"image pull Secret {secret!r} (spec.model.imagePullSecrets) does not exist in namespace "
                       f"{ns!r}: create it or remove it from the spec")
        if m.service_account_name and fetch("ServiceAccount", m.service_account_name) is None:
            yield (f"ServiceAccount {m.service_account_name!r} (spec.model.serviceAccountName) does not exist in "
                   f"namespace {ns!r}")

    def _degrade_invalid(self, body: dict, message: str) -> None:
        meta = body["metadata"]
        status = dict(body.get("status") or {})
        if status.get("phase") == Phase.DEGRADED.value and status.get("message") == message:
            return
        self.kube.patch_status(meta["namespace"], meta["name"], {"phase": Phase.DEGRADED.value, "message": message})
        self.kube.event(body, "Warning", "InvalidSpec", message)


def _has_phase(namespace: str, name: str, phase: Phase) -> bool:
    return (namespace, name, phase.value) in getattr(opmetrics.PHASE, "_metrics", {})
