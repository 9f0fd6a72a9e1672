"""The executor: carries out a `reconcile.Plan` through `k8s.Kube`, and nothing more.

It makes no decision: the plan says which objects to apply, scale or delete, which status to
write, which Events to post; the executor writes them in the plan's order (status first: it is
the record of the rollout state, so a crash after it re-derives the same objects) and exports
the operator's own metrics.
"""

from __future__ import annotations

import logging

from modeldeploy import opmetrics
from modeldeploy.api import ModelDeployment, Phase
from modeldeploy.k8s import Kube
from modeldeploy.reconcile import Plan, status_changed
from modeldeploy.resources.common import HANDOVER_MANAGER, controlled_by

log = logging.getLogger(__name__)


class NameTaken(Exception):
    """A create found someone else's object of that name: nothing was written; plan again on what is there."""


class Executor:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def run(self, md: ModelDeployment, body: dict, p: Plan) -> str | None:
        """Carry out the plan; returns the resourceVersion of our status write, if one was made."""
        namespace, name = md.namespace, md.name
        written_rv = None
        # Status first: it is the record of the rollout state. If we crash after this, the next
        # reconcile re-derives the same objects from it; the other order could repeat a step.
        if status_changed(md.status, p.status):
            log.info("%s/%s: %s -> %s: %s", namespace, name, md.status.phase.value, p.status.phase.value,
                     p.status.message)
            written = self.kube.patch_status(namespace, name, p.status.model_dump(by_alias=True, mode="json"),
                                             resource_version=md.metadata["resourceVersion"])
            written_rv = str(written.get("metadata", {}).get("resourceVersion", ""))
        self.execute(md, p)
        for ev in p.events:
            self.kube.event(body, ev.type, ev.reason, ev.message)
        self.export_metrics(md, p)
        return written_rv

    def execute(self, md: ModelDeployment, p: Plan) -> None:
        namespace, name = md.namespace, md.name
        for action in p.actions:
            if action.verb == "apply":
                assert action.body is not None
                if action.new:
                    self.ensure_absent(md, action.kind, action.name)
                self.kube.apply(action.body)
                log.info("%s/%s: %s %s %s", namespace, name, "created" if action.new else "updated", action.kind,
                         action.name)
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

    def ensure_absent(self, md: ModelDeployment, kind: str, name: str) -> None:
        """Before a create: a forced apply would take over an object of that name that is not ours.
        The plan saw none, but its view may be old (or, for a new owner, assumed): ask the server."""
        found = self.kube.get_fresh(kind, md.namespace, name)
        if found is not None and not controlled_by(found, md):
            raise NameTaken(f"{kind} {md.namespace}/{name} exists and is not ours")

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
