"""kopf wiring, and nothing else: every handler is one line into `controller.Controller`.

Only `@kopf.on.event` handlers are used, deliberately: they make kopf write nothing to our
objects (no last-handled-configuration annotation, no progress storage, no finalizer), so the
operator's API writes are exactly the ones `controller` decides on. Children map back to their
owner by `modeldeploy.io/name`.

kopf makes its own API connection (its login), apart from the operator's client: `login` gives it
the kubeconfig context `--context` names (kopf's default login knows only the current-context),
so both talk to the same cluster as the same user.

Children are watched through a server-side label selector (`app.kubernetes.io/managed-by=
modeldeploy` on the list and watch requests, kopf's `settings.watching.label_selectors`), not
kopf's client-side `labels=` filter: on a shared cluster the API server then sends only our
objects, so the operator's memory and CPU grow with its own objects, not with the cluster's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from modeldeploy import GROUP, KIND, PLURAL, VERSION
from modeldeploy.config import Settings
from modeldeploy.controller import Controller, executor
from modeldeploy.http import HealthServer
from modeldeploy.k8s import Kube, context_namespace, load_api_client, load_configuration
from modeldeploy.logs import setup_logging
from modeldeploy.resources.common import LABEL_NAME, MANAGED_BY


class EventsOnlyDiffBase(kopf.DiffBaseStorage):
    """No diff base. kopf builds one (a deep copy of the body) for every event of every watched
    object, to detect changes for on.create/update/field handlers; with on.event handlers only it
    is never used, and under a burst it was the largest part of kopf's per-event CPU."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


STATE: dict[str, Any] = {}
# Sent as the labelSelector of every list/watch of the child kinds below (and of nothing else).
CHILD_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
# (group, version, plural) of each child kind; the handlers below subscribe to the same ones.
CHILD_RESOURCES = (("apps", "v1", "deployments"), ("", "v1", "services"),
                   ("autoscaling", "v2", "horizontalpodautoscalers"), ("policy", "v1", "poddisruptionbudgets"))


@kopf.on.login()
def login(settings: kopf.OperatorSettings, logger: Any, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's connection: the configured context, else kopf's default (in-cluster, else the current-context)."""
    cfg = Settings()
    if not cfg.kube_context:
        return kopf.login_via_client(settings=settings, logger=logger, **kwargs)
    return connection_info(load_configuration(cfg.kubeconfig, cfg.kube_context),
                           context_namespace(cfg.kubeconfig, cfg.kube_context), settings.networking.trust_env)


def connection_info(c: Any, namespace: str | None, trust_env: bool) -> kopf.ConnectionInfo:
    """kopf's credentials from a loaded kubernetes client Configuration (what kopf's login_via_client
    reads from the client's global default configuration)."""
    # The token through the getter: an exec or auth-provider kubeconfig refreshes it there.
    header = c.get_api_key_with_prefix("BearerToken") or c.get_api_key_with_prefix("authorization") or ""
    scheme, _, token = header.partition(" ") if " " in header else ("", "", header)  # RFC 7235: [scheme ]token
    return kopf.ConnectionInfo(server=c.host, ca_path=c.ssl_ca_cert, insecure=not c.verify_ssl,
                               username=c.username or None, password=c.password or None, scheme=scheme or None,
                               token=token or None, certificate_path=c.cert_file, private_key_path=c.key_file,
                               default_namespace=namespace, proxy_url=c.proxy, trust_env=trust_env)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    cfg = Settings()
    setup_logging(cfg.log_format)
    # Deliberate kopf settings: our prefix for anything kopf might store, no diff base (see
    # EventsOnlyDiffBase), server-side label selectors for the child watches, bounded watches so
    # stale connections are replaced, and capped error backoffs.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = EventsOnlyDiffBase()
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.queueing.error_delays = [1, 2, 5, 10, 30, 60]
    settings.posting.level = logging.WARNING
    for group, version, plural in CHILD_RESOURCES:
        settings.watching.label_selectors[(group, version, plural) if group else (version, plural)] = CHILD_SELECTOR
    # One connection per reconcile worker, one per executor thread (creates, Events), a few for the rest.
    kube = Kube(load_api_client(cfg.kubeconfig, pool_size=cfg.workers + executor.connections(cfg.workers) + 4,
                                context=cfg.kube_context))
    controller = Controller(kube, cfg)
    await controller.start()
    health = HealthServer(cfg.http_host_port, ready=lambda: controller.started)
    await health.start()
    STATE.update(controller=controller, health=health)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if "controller" in STATE:
        await STATE["controller"].stop()
    if "health" in STATE:
        await STATE["health"].stop()
    STATE.clear()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def modeldeployment_event(type: str, name: str, namespace: str | None, meta: Mapping[str, Any],
                                event: Mapping[str, Any], **_: Any) -> None:
    if "controller" not in STATE or namespace is None:
        return
    STATE["controller"].kube.observe(KIND, type, event["object"])
    if type == "DELETED":
        STATE["controller"].forget(namespace, name)
    else:
        STATE["controller"].enqueue(namespace, name, meta.get("resourceVersion"))


def _child(kind: str, event: Mapping[str, Any], labels: Mapping[str, str], namespace: str | None) -> None:
    owner = labels.get(LABEL_NAME)
    if owner and namespace and "controller" in STATE:
        STATE["controller"].kube.observe(kind, event.get("type"), event["object"])
        # A Deployment's status changes in bursts (replicas, updated, ready, available...):
        # a short debounce folds a burst into one reconcile.
        STATE["controller"].enqueue(namespace, owner, delay=0.25)


@kopf.on.event("apps", "v1", "deployments")
async def deployment_event(event: Mapping[str, Any], labels: Mapping[str, str], namespace: str | None,
                           **_: Any) -> None:
    _child("Deployment", event, labels, namespace)


@kopf.on.event("v1", "services")
async def service_event(event: Mapping[str, Any], labels: Mapping[str, str], namespace: str | None,
                        **_: Any) -> None:
    _child("Service", event, labels, namespace)


@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers")
async def hpa_event(event: Mapping[str, Any], labels: Mapping[str, str], namespace: str | None,
                    **_: Any) -> None:
    _child("HorizontalPodAutoscaler", event, labels, namespace)


@kopf.on.event("policy", "v1", "poddisruptionbudgets")
async def pdb_event(event: Mapping[str, Any], labels: Mapping[str, str], namespace: str | None,
                    **_: Any) -> None:
    _child("PodDisruptionBudget", event, labels, namespace)
