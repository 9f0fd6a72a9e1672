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
import base64
import contextlib
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from modeldeploy import KIND, opmetrics
from modeldeploy.api import MetricCheck, ModelDeployment, Phase, parse_duration
from modeldeploy.config import Settings
from modeldeploy.k8s import Kube
from modeldeploy.metrics import MetricProvider, ProviderError, queries
from modeldeploy.metrics.prometheus import PrometheusProvider
from modeldeploy.reconcile import Observed, Plan, plan, status_changed
from modeldeploy.reconcile import view_of as plan_view
from modeldeploy.resources.common import child_names, deployment_name, revision_hash
from modeldeploy.rollout.analysis import AnalysisResult, Measurement, analyse
from modeldeploy.rollout.engine import analysis_due_in, fmt_time
from modeldeploy.routers import router_for

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
    error: bool = False                 # an exception: retry with exponential backoff
    backoff: bool = False               # a semantic problem: retry with exponential backoff


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
        # resourceVersion of our own last write per object: its watch event needs no reconcile.
        self.own_writes: dict[Key, str] = {}
        # With peering, only the highest-priority live replica reconciles (see `is_active_peer`).
        self.active = not settings.peering

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

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self.known.discard(key)
        self.own_writes.pop(key, None)
        self.kube.forget_names(namespace, child_names(name))
        self.failures.pop(key, None)
        self.queue.forget(key)
        opmetrics.MANAGED.set(len(self.known))
        for phase in Phase:
            with contextlib.suppress(KeyError):  # never exported for this object
                opmetrics.PHASE.remove(namespace, name, phase.value)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.settings.workers)]
        self._tasks.append(asyncio.create_task(self._resync()))
        if self.settings.peering:
            self._tasks.append(asyncio.create_task(self._peering_gate()))
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

    async def _peering_gate(self) -> None:
        """Follow kopf's peering object: work only while we are the highest-priority live replica.

        kopf pauses a lower-priority replica's watch streams, but our own resync loop and
        requeues would keep going; this gate stops them too, so two replicas never both write.
        """
        loop = asyncio.get_running_loop()
        while True:
            try:
                active = await loop.run_in_executor(None, self.is_active_peer)
            except Exception as e:  # an API blip must not flip leadership: keep the last answer
                log.warning("peering check failed: %s", e)
                active = self.active
            if active != self.active:
                log.info("peering: this replica is now %s", "active" if active else "standing by")
                self.active = active
                if active:
                    for key in list(self.known):
                        self.queue.add(key)
            await asyncio.sleep(3)

    def is_active_peer(self) -> bool:
        cfg = self.settings
        obj = self.kube.get_peering(cfg.peering, cfg.namespaces[0] if cfg.namespaces else None)
        if obj is None:
            return False
        now = datetime.now(UTC)
        mine = False
        for identity, info in (obj.get("status") or {}).items():
            if not isinstance(info, dict):
                continue
            lastseen = datetime.fromisoformat(str(info.get("lastseen")))
            if lastseen.tzinfo is None:
                lastseen = lastseen.replace(tzinfo=UTC)
            if (now - lastseen).total_seconds() > float(info.get("lifetime", 60)):
                continue  # dead peer
            if identity == cfg.peering_identity:
                mine = True
            elif int(info.get("priority", 0)) >= cfg.peering_priority:
                return False
        return mine

    async def _worker(self, _: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            key = await self.queue.get()
            if not self.active:  # standing by: the active replica handles it
                self.queue.done(key)
                continue
            try:
                result = await loop.run_in_executor(self._pool, self.reconcile, key)
            finally:
                self.queue.done(key)
            if result.error or result.backoff:
                n = self.failures.get(key, 0) + 1
                self.failures[key] = n
                delay = min(self.settings.backoff_base_seconds * 2 ** (n - 1), self.settings.backoff_max_seconds)
                self.queue.add_after(key, delay)
                continue
            self.failures.pop(key, None)
            if result.requeue_after is not None:  # e.g. the next canary analysis is due then
                self.queue.add_after(key, result.requeue_after)

    # -- one reconcile (in a worker thread) ------------------------------------------------------
    def reconcile(self, key: Key) -> Result:
        t0 = time.perf_counter()
        try:
            result = self._reconcile(key)
            opmetrics.RECONCILES.labels("backoff" if result.backoff else "ok").inc()
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
            return Result(backoff=True)

        observed = self.observe(md)
        now = datetime.now(UTC).replace(microsecond=0)
        analysis = self.run_analysis(md, observed, now)
        p = plan(md, observed, now, analysis)
        # Status first: it is the record of the rollout state. If we crash after this, the next
        # reconcile re-derives the same objects from it; the other order could repeat a step.
        if status_changed(md.status, p.status):
            log.info("%s/%s: %s -> %s: %s", namespace, name, md.status.phase.value, p.status.phase.value,
                     p.status.message)
            written = self.kube.patch_status(namespace, name, p.status.model_dump(by_alias=True, mode="json"))
            self.own_writes[key] = str(written.get("metadata", {}).get("resourceVersion", ""))
        self.execute(md, body, p)
        for ev in p.events:
            self.kube.event(body, ev.type, ev.reason, ev.message)
        self.export_metrics(md, p)
        d = p.decision
        if d is not None and d.consume:
            self.kube.patch_merge(KIND, namespace, name, {"metadata": {"annotations": {a: None for a in d.consume}}})
        if observed.problems:
            return Result(requeue_after=self.settings.backoff_base_seconds, backoff=True)
        if p.requeue_after is not None:
            return Result(requeue_after=p.requeue_after)
        return Result()

    def execute(self, md: ModelDeployment, body: dict, p: Plan) -> None:
        namespace, name = md.namespace, md.name
        created: list[str] = []
        for action in p.actions:
            if action.verb == "apply":
                assert action.body is not None
                self.kube.apply(action.body)
                log.info("%s/%s: %s %s %s", namespace, name, "created" if action.new else "updated", action.kind,
                         action.name)
                if action.new:
                    created.append(f"{action.kind} {action.name}")
                elif action.kind == "Deployment":
                    self.kube.event(body, "Normal", "UpdatedDeployment",
                                    f"updated Deployment {action.name} to match the spec")
            elif action.verb == "scale":
                assert action.body is not None
                self.kube.patch_merge(action.kind, namespace, action.name, action.body)
                log.info("%s/%s: scaled %s %s to 0", namespace, name, action.kind, action.name)
            else:
                self.kube.delete(action.kind, namespace, action.name)
                log.info("%s/%s: deleted %s %s", namespace, name, action.kind, action.name)
        if created:  # one Event for everything created in this pass
            self.kube.event(body, "Normal", "Created", "created " + ", ".join(created))

    def export_metrics(self, md: ModelDeployment, p: Plan) -> None:
        ns, name = md.namespace, md.name
        for phase in Phase:
            opmetrics.PHASE.labels(ns, name, phase.value).set(1 if phase == p.status.phase else 0)
        opmetrics.CANARY_WEIGHT.labels(ns, name).set(p.status.canary_weight)
        d = p.decision
        if d is None:
            return
        if d.promoted:
            opmetrics.PROMOTIONS.labels(ns, name).inc()
        if d.rolled_back:
            opmetrics.ROLLBACKS.labels(ns, name).inc()

    # -- canary analysis (I/O: queries the metric provider) ---------------------------------------
    def run_analysis(self, md: ModelDeployment, observed: Observed, now: datetime) -> AnalysisResult | None:
        """Measure the canary when its step's analysis is due; None when nothing is due."""
        due = analysis_due_in(md, now)
        canary = md.status.canary
        if due is None or due > 0 or canary is None or canary.hash != revision_hash(md.spec.model):
            return None
        if not plan_view(md, observed).canary_ready:
            return None
        a = md.spec.rollout.analysis
        stamp = fmt_time(now)
        if not a.metrics:
            return AnalysisResult("Pass", [], "no metrics configured: the step advanced on time")
        interval = md.spec.rollout.canary.interval
        ns, name = md.namespace, md.name
        try:
            provider = self.provider_for(md)
        except ProviderError as e:
            provider, setup_error = None, str(e)
        measurements: list[Measurement] = []
        requests: Measurement | None = None
        if provider is None:
            requests = Measurement(check=None, error=setup_error)
        else:
            requests = _measure(provider, None, queries.request_count(ns, name, "canary", canary.hash, interval))
            for check in a.metrics:
                promql = queries.render(check.query, namespace=ns, name=name, track="canary", revision=canary.hash,
                                        interval=interval) if check.query else \
                    queries.builtin(check.name, ns, name, "canary", canary.hash, interval)
                measurements.append(_measure(provider, check, promql))
        result = analyse(a, requests, measurements, stamp)
        for rec in result.records:
            opmetrics.ANALYSIS.labels(ns, name, rec.metric, rec.verdict).inc()
        log.info("%s/%s: analysis %s: %s", ns, name, result.verdict, result.reason)
        return result

    def provider_for(self, md: ModelDeployment) -> MetricProvider:
        prom = md.spec.rollout.analysis.prometheus
        if prom is None:
            raise ProviderError("spec.rollout.analysis.prometheus is not set")
        kwargs: dict = {}
        if prom.secret_ref is not None:
            secret = self.kube.get("Secret", md.namespace, prom.secret_ref.name)
            if secret is None:
                raise ProviderError(f"Secret {prom.secret_ref.name!r} (analysis.prometheus.secretRef) not found")
            data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
            kwargs = {"token": data.get("token"), "username": data.get("username"),
                      "password": data.get("password"), "ca_pem": data.get("ca.crt")}
        return PrometheusProvider(prom.address, timeout=parse_duration(prom.timeout),
                                  insecure_skip_verify=prom.insecure_skip_verify, **kwargs)

    def observe(self, md: ModelDeployment) -> Observed:
        ns = md.namespace
        # A ModelDeployment never reconciled before has no children but those our own writes
        # made (and those are cached): skip the GETs that would all answer 404.
        fresh = md.status.observed_generation is None

        def get(kind: str, namespace: str, name: str) -> dict | None:
            return self.kube.get(kind, namespace, name, uncached_absent=fresh)

        return Observed(
            stable=get("Deployment", ns, deployment_name(md, "stable")),
            canary=get("Deployment", ns, deployment_name(md, "canary")),
            service=get("Service", ns, md.name),
            hpa=get("HorizontalPodAutoscaler", ns, md.name),
            pdb=get("PodDisruptionBudget", ns, md.name),
            routing=self.observe_routing(md),
            problems=list(self.check_references(md)),
        )

    def observe_routing(self, md: ModelDeployment) -> dict[tuple[str, str], dict | None]:
        router = router_for(md)
        if not router.kinds():
            return {}
        out: dict[tuple[str, str], dict | None] = {}
        for obj in router.objects(md, 0):
            key = (obj["kind"], obj["metadata"]["name"])
            out[key] = self.kube.get(key[0], md.namespace, key[1])
        return out

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


def _measure(provider: MetricProvider, check: MetricCheck | None, promql: str) -> Measurement:
    try:
        return Measurement(check=check, value=provider.query(promql))
    except ProviderError as e:
        return Measurement(check=check, error=str(e))

