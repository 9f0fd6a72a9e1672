"""Observation: what the cluster holds for one ModelDeployment, gathered into `reconcile.Observed`.

Reads go through `k8s.Kube`'s cache of watched objects, so a steady-state reconcile costs no
requests for the children; only the kinds no watch covers (routes, the ServiceAccount, the
Prometheus credentials Secret) are read from the server.

Why Secrets and ConfigMaps referenced by the model (env valueFrom, imagePullSecrets) are not
looked up: that needed `get` on every Secret in the cluster, for a check the kubelet makes anyway.
A missing one shows on the pods (CreateContainerConfigError, ErrImagePull) and, through the
Deployment's status, as a rollout that makes no progress: Degraded with ProgressDeadlineExceeded
for the stable, a canary rolled back at its deadline. The operator does not watch pods, so it says
no more than that. A missing ServiceAccount is still checked here (reading one is harmless, and
without it the ReplicaSet cannot even create the pods).

How a reference that appears is noticed within seconds. For the model's env and pull Secrets the
kubelet retries the pods, and their Deployment's status change is a watch event that reconciles at
once. For what this module finds missing (the ServiceAccount, the Prometheus credentials Secret)
the choice was a bounded re-check, not a watch: a re-check after max(2 s, 1/10 of the time it has
been missing), at most every 5 min (`reconcile.reference_recheck`; no exponential backoff).
Watching Secrets was rejected for least privilege: RBAC grants list/watch by resource, never by
label or for metadata only (a metadata-only or label-filtered watch needs the same list/watch
verbs, which return every Secret's data in the watched namespaces), while the operator now holds
`get` only, optionally narrowed to names. Watching ServiceAccounts would need no secret data, but
it keeps every ServiceAccount of the cluster in memory, where the operator's memory is meant to
grow with its own objects only (handlers.py); the re-check costs one GET per missing name instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from modeldeploy.api import ModelDeployment
from modeldeploy.k8s import Kube
from modeldeploy.reconcile import Observed
from modeldeploy.resources.common import deployment_name
from modeldeploy.routers import router_for


class Observer:
    def __init__(self, kube: Kube, checks: Sequence[Callable[[ModelDeployment], list[str]]] = ()) -> None:
        self.kube = kube
        # More semantic checks, each owned by the component whose input it guards (e.g. the analysis
        # runner's Prometheus settings): what they find is a problem like a missing reference.
        self.checks = tuple(checks)

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
            problems=[*self.check_references(md), *(p for check in self.checks for p in check(md))],
        )

    def observe_routing(self, md: ModelDeployment) -> dict[tuple[str, str], dict | None]:
        """The current router's objects, and those a previous router made (status.routing): the plan
        deletes what the current router no longer manages."""
        keys = {(o["kind"], o["metadata"]["name"]) for o in router_for(md).objects(md, 0)}
        for ref in md.status.routing:
            kind, _, name = ref.partition("/")
            if kind and name:
                keys.add((kind, name))
        return {key: self.kube.get(key[0], md.namespace, key[1]) for key in sorted(keys)}

    def check_references(self, md: ModelDeployment) -> Iterable[str]:
        """Semantic checks the schema cannot make: does the model's ServiceAccount exist?"""
        ns, m = md.namespace, md.spec.model
        if m.service_account_name and self.kube.get("ServiceAccount", ns, m.service_account_name) is None:
            yield (f"ServiceAccount {m.service_account_name!r} (spec.model.serviceAccountName) does not exist in "
                   f"namespace {ns!r}")
