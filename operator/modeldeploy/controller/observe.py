"""Observation: what the cluster holds for one ModelDeployment, gathered into `reconcile.Observed`.

Reads go through `k8s.Kube`'s cache of watched objects, so a steady-state reconcile costs no
requests for the children; only the kinds no watch covers (routes, referenced Secrets) are read
from the server.
"""

from __future__ import annotations

from collections.abc import Iterable

from modeldeploy.api import ModelDeployment
from modeldeploy.k8s import Kube
from modeldeploy.reconcile import Observed
from modeldeploy.resources.common import deployment_name
from modeldeploy.routers import router_for


class Observer:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube

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
        """The current router's objects, and those a previous router made (status.routing): the plan
        deletes what the current router no longer manages."""
        keys = {(o["kind"], o["metadata"]["name"]) for o in router_for(md).objects(md, 0)}
        for ref in md.status.routing:
            kind, _, name = ref.partition("/")
            if kind and name:
                keys.add((kind, name))
        return {key: self.kube.get(key[0], md.namespace, key[1]) for key in sorted(keys)}

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
