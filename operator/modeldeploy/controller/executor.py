"""The executor: carries out a `reconcile.Plan` through `k8s.Kube`, and nothing more.

It makes no decision: the plan says which objects to apply, scale or delete, which status to
write, which Events to post; the executor writes them in the plan's order (status first: it is
the record of the rollout state, so a crash after it re-derives the same objects) and exports
the operator's own metrics.

One exception to the one-at-a-time order, for speed in a burst: the children a pass creates from
nothing (the stable Deployment, its Service, HPA, PDB: none exists yet, so no order between them
can matter) are created concurrently, and only the Deployments are waited for. Under a burst the
API server answered a Service create in 1.6-2.4 s (ClusterIP allocation) against 0.2-0.4 s for a
Deployment; waited for in sequence it held every first-pass reconcile, and the whole burst with
it (the pods need only the Deployment; a later pass sees the Service arrive, and Ready waits for
it: `reconcile.plan`). A create left running is in the cache as
its desired object until the server answers (so the next pass does not create it again); if it
fails, the cache forgets it and the owner is queued again (`on_create_failed`). The status write
still comes before them, also on a new object's first pass: a write from a stale read then gets
409 and nothing else is written (tests/integration/test_leader.py); writing it alongside the
creates was tried and broke that.

A child write the API server refuses (4xx/5xx: a ResourceQuota, an admission webhook, an invalid
field) stops the pass at that write and is raised as `ApplyFailed` with the server's own message,
which the controller keeps for the next plan (Degraded, reason ApplyFailed) and retries with
backoff. While an object has such an error its creates are not left running in the background:
each pass then fails (or succeeds) as a whole, so the backoff grows and the condition clears only
after a pass that wrote everything.

Events are best effort and nothing waits for them: they are posted in the background, in order
per object (one lane per object, a few lanes in all), so a reconcile does not hold its worker for
them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

from kubernetes.client.rest import ApiException

from modeldeploy import opmetrics
from modeldeploy.api import ModelDeployment, Phase
from modeldeploy.k8s import Kube
from modeldeploy.reconcile import Action, Event, Plan, status_changed
from modeldeploy.resources.common import HANDOVER_MANAGER, controlled_by

log = logging.getLogger(__name__)

# Background threads that post Events; one object's Events always go through the same one.
EVENT_LANES = 4
# Kinds whose creates from nothing are independent of each other (see the module docstring).
CONCURRENT_CREATE_KINDS = frozenset({"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"})


def connections(workers: int) -> int:
    """API connections the executor's threads can use at once, beside the reconcile workers' own."""
    return workers + EVENT_LANES


def concurrent_creates(actions: list[Action]) -> int:
    """How many of the plan's first actions are creates of independent children (0 or >= 2)."""
    n = 0
    for a in actions:
        if not (a.verb == "apply" and a.new and a.kind in CONCURRENT_CREATE_KINDS):
            break
        n += 1
    return n if n >= 2 else 0


class NameTaken(Exception):
    """A create found someone else's object of that name: nothing was written; plan again on what is there."""


class ApplyFailed(Exception):
    """The API server refused a write of a child: `message` is what status says; `status_rv` the
    resourceVersion of this pass's status write, if it made one (so its watch event is known as ours)."""

    def __init__(self, message: str, status_rv: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_rv = status_rv


def refusal(action: Action, namespace: str, e: ApiException) -> str:
    """The server's own words for a refused write, e.g. 'create Deployment ml/x: 403 Forbidden: deployments.apps
    "x" is forbidden: exceeded quota: ...' (from the Status body's message when there is one)."""
    message = ""
    try:
        body = json.loads(e.body) if e.body else {}
        message = str(body.get("message") or "") if isinstance(body, dict) else ""
    except (TypeError, ValueError):
        message = str(e.body or "")[:500]
    verb = "create" if action.verb == "apply" and action.new else "apply" if action.verb == "handover" else action.verb
    said = f"{verb} {action.kind} {namespace}/{action.name}: {e.status} {e.reason}"
    return f"{said}: {message}" if message else said


class Executor:
    def __init__(self, kube: Kube, workers: int = 16,
                 on_create_failed: Callable[[str, str, str], None] | None = None) -> None:
        self.kube = kube
        # Shared by all reconciles: the creates a pass does not wait for, and a second Deployment's.
        # One per worker; more do not help: the API server allocates ClusterIPs one at a time
        # (kube-apiserver 1.34 holds the service-CIDR allocator's lock across the IPAddress create),
        # so Service creates finish at a fixed rate (bench-operator: 16 in flight, 1.3 s each; 64, 5.5 s).
        self._creates = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="create")
        self._event_lanes = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"events-{i}")
                             for i in range(EVENT_LANES)]
        self.on_create_failed = on_create_failed

    def close(self) -> None:
        """Wait for creates and Events in flight (called after the last reconcile)."""
        self._creates.shutdown(wait=True)
        for lane in self._event_lanes:
            lane.shutdown(wait=True)

    def run(self, md: ModelDeployment, body: dict, p: Plan, background_creates: bool = True) -> str | None:
        """Carry out the plan; returns the resourceVersion of our status write, if one was made.
        A refused child write raises `ApplyFailed` after the plan's Events and metrics are out."""
        written_rv = None
        # Status first: it is the record of the rollout state. If we crash after this, the next
        # reconcile re-derives the same objects from it; the other order could repeat a step. And
        # it is the optimistic lock: a decision made on a stale read stops here, with 409.
        if status_changed(md.status, p.status):
            written_rv = self._write_status(md, p)
        events = list(p.events)
        try:
            self.execute(md, p, background_creates=background_creates)
        except ApplyFailed as e:
            e.status_rv = written_rv
            events = [ev for ev in events if not ev.of_writes]  # those writes did not all happen
            raise
        finally:
            if events:
                lane = self._event_lanes[hash((md.namespace, md.name)) % len(self._event_lanes)]
                lane.submit(self._post_events, body, events)
            self.export_metrics(md, p)
        return written_rv

    def _write_status(self, md: ModelDeployment, p: Plan) -> str:
        log.info("%s/%s: %s -> %s: %s", md.namespace, md.name, md.status.phase.value, p.status.phase.value,
                 p.status.message)
        written = self.kube.patch_status(md.namespace, md.name, p.status.model_dump(by_alias=True, mode="json"),
                                         resource_version=md.metadata["resourceVersion"])
        return str(written.get("metadata", {}).get("resourceVersion", ""))

    def _post_events(self, body: dict, events: list[Event]) -> None:
        for ev in events:
            try:
                self.kube.event(body, ev.type, ev.reason, ev.message)
            except Exception:  # best effort (Kube.event already swallows API errors): never lose the lane
                log.exception("could not post event %s", ev.reason)

    def execute(self, md: ModelDeployment, p: Plan, background_creates: bool = True) -> None:
        """The plan's child writes, in order; the first one refused raises `ApplyFailed` (nothing after it
        runs). `background_creates=False`: wait for every create (an object whose last pass failed)."""
        n = concurrent_creates(p.actions) if background_creates else 0
        if n:
            deployments = [a for a in p.actions[:n] if a.kind == "Deployment"]
            for a in p.actions[:n]:
                if a.kind != "Deployment":
                    assert a.body is not None
                    self.kube.observe(a.kind, "ADDED", a.body)  # in flight: the next pass leaves it alone
                    self._creates.submit(self._write, md, a).add_done_callback(partial(self._created, md, a))
            futures = [self._creates.submit(self._write, md, a) for a in deployments[1:]]
            if deployments:
                self._write(md, deployments[0])
            for f in futures:
                f.result()
        for action in p.actions[n:]:
            self._write(md, action)

    def _write(self, md: ModelDeployment, action: Action) -> None:
        """One child write; a refusal by the API server becomes `ApplyFailed` with its message."""
        namespace, name = md.namespace, md.name
        try:
            if action.verb == "apply":
                self._apply(md, action)
            elif action.verb == "handover":
                assert action.body is not None
                self.kube.apply({"apiVersion": "apps/v1", "kind": action.kind,
                                 "metadata": {"name": action.name, "namespace": namespace}, **action.body},
                                manager=HANDOVER_MANAGER)
                log.info("%s/%s: %s %s: %s held for the autoscaler", namespace, name, action.kind, action.name,
                         action.body)
            elif action.verb in ("scale", "patch"):
                assert action.body is not None
                self.kube.patch_merge(action.kind, namespace, action.name, action.body)
                log.info("%s/%s: patched %s %s: %s", namespace, name, action.kind, action.name, action.body)
            else:
                self.kube.delete(action.kind, namespace, action.name)
                log.info("%s/%s: deleted %s %s", namespace, name, action.kind, action.name)
        except ApiException as e:
            if e.status == 403 and "NamespaceTerminating" in str(e.body):
                raise  # not a refusal to report: the namespace is going away (controller.core)
            raise ApplyFailed(refusal(action, namespace, e)) from e

    def ensure_absent(self, md: ModelDeployment, kind: str, name: str) -> None:
        """Before a create: a forced apply would take over an object of that name that is not ours.
        The plan saw none, but its view may be old (or, for a new owner, assumed): ask the server."""
        found = self.kube.get_fresh(kind, md.namespace, name)
        if found is not None and not controlled_by(found, md):
            raise NameTaken(f"{kind} {md.namespace}/{name} exists and is not ours")

    def _apply(self, md: ModelDeployment, action: Action) -> None:
        assert action.body is not None
        if action.new:
            self.ensure_absent(md, action.kind, action.name)
        self.kube.apply(action.body)
        log.info("%s/%s: %s %s %s", md.namespace, md.name, "created" if action.new else "updated", action.kind,
                 action.name)

    def _created(self, md: ModelDeployment, action: Action, f: Future[None]) -> None:
        """A create the pass did not wait for has finished: on failure, forget it and retry the owner
        (with the server's message when it refused the create)."""
        e = f.exception()
        if e is None:
            return
        self.kube.forget(action.kind, md.namespace, action.name)
        if isinstance(e, ApiException) and e.status == 403 and "NamespaceTerminating" in str(e.body):
            # The namespace is being deleted (its children go first, and their deletion woke the reconcile that
            # re-created them): the object goes with it; nothing to retry, nothing to warn about.
            log.debug("%s/%s: create of %s %s skipped: namespace terminating", md.namespace, md.name, action.kind,
                      action.name)
            return
        opmetrics.RECONCILE_ERRORS.labels(type(e).__name__).inc()
        log.warning("%s/%s: create of %s %s failed: %s", md.namespace, md.name, action.kind, action.name, e)
        if self.on_create_failed is not None:
            self.on_create_failed(md.namespace, md.name, e.message if isinstance(e, ApplyFailed) else "")

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

    def degrade_invalid(self, body: dict, message: str) -> None:
        meta = body["metadata"]
        status = dict(body.get("status") or {})
        if status.get("phase") == Phase.DEGRADED.value and status.get("message") == message:
            return
        self.kube.patch_status(meta["namespace"], meta["name"], {"phase": Phase.DEGRADED.value, "message": message})
        self.kube.event(body, "Warning", "InvalidSpec", message)
