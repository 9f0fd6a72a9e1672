"""The only module that talks to the Kubernetes API server.

Writes use server-side apply (field manager `modeldeploy`, forced): one request creates or
updates, fields we stop setting are removed, and fields others own (the HPA's `replicas`) are
left alone. Forced applies go only to objects we control (owner reference), never to someone
else's object of the same name. The reconciler calls `apply` only after `diff.is_subset` says something differs,
so steady state costs reads, never writes. Every write is counted in the operator's metrics.
"""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from modeldeploy import GROUP, KIND, PLURAL, VERSION, opmetrics
from modeldeploy.resources.common import FIELD_MANAGER

log = logging.getLogger(__name__)

class Conflict(Exception):
    """A conditional write found a newer resourceVersion: someone else wrote the object since we read it."""


# kind -> (API path prefix, plural). Namespaced kinds only; the operator manages nothing else.
KINDS: dict[str, tuple[str, str]] = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "Secret": ("/api/v1", "secrets"),  # read only: the Prometheus credentials Secret (controller/analysis.py)
    "ServiceAccount": ("/api/v1", "serviceaccounts"),  # read only: spec.model.serviceAccountName exists
    "Pod": ("/api/v1", "pods"),  # listed only: a revision's ready pod, to read its model card (controller/cards.py)
    "HTTPRoute": ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    "VirtualService": ("/apis/networking.istio.io/v1", "virtualservices"),
    KIND: (f"/apis/{GROUP}/{VERSION}", PLURAL),
}


def _rv(obj: dict[str, Any]) -> int:
    """resourceVersion as a number, for ordering our writes against watch events (etcd revisions)."""
    try:
        return int(obj.get("metadata", {}).get("resourceVersion", 0))
    except (TypeError, ValueError):
        return 0


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_configuration(kubeconfig: str | None = None, context: str | None = None) -> client.Configuration:
    """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config).

    An explicit kubeconfig or context always means the kubeconfig, as with kubectl. Raises
    ConfigException (a context that is not in the file, no kubeconfig) or OSError."""
    cfg = client.Configuration()
    try:
        if kubeconfig or context:
            raise config.ConfigException("explicit kubeconfig")
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    return cfg


def load_api_client(kubeconfig: str | None = None, pool_size: int = 16, context: str | None = None,
                    retries: bool | None = None) -> client.ApiClient:
    """A client for `load_configuration`'s cluster. `retries=False` turns off urllib3's three silent
    retries (the CLI reports a failure at once instead)."""
    cfg = load_configuration(kubeconfig, context)
    cfg.connection_pool_maxsize = pool_size
    cfg.retries = retries
    return client.ApiClient(cfg)


def context_namespace(kubeconfig: str | None, context: str | None) -> str | None:
    """The namespace the kubeconfig's context (default: its current-context) names, if any (kubectl's
    default namespace). Raises like `load_configuration`."""
    contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
    ctx = next((c for c in contexts if c.get("name") == context), None) if context else current
    return (ctx or {}).get("context", {}).get("namespace") or None


# Kinds only ever listed by label selector (`Kube.list`), never read by name or watched: the RBAC grants
# `list` alone for them (tests/unit/test_chart_render.py checks the chart against these tables).
LISTED_KINDS = {"Pod"}

# Kinds whose objects arrive through kopf watch events, so they can be served from memory.
WATCHED_KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", KIND}


class Kube:
    """Thin, typed-enough wrapper over the REST API for the kinds in `KINDS`.

    Reads of watched kinds are served from a cache that the watch events (fed in by the kopf
    handlers through `observe`) and our own writes' responses keep current — the informer
    pattern, so a steady-state reconcile costs no API requests. A cache miss falls back to a GET
    and remembers the answer (including "absent").
    """

    def __init__(self, api: client.ApiClient, cache: bool = True) -> None:
        self.api = api
        self.instance = socket.gethostname()
        self.use_cache = cache
        self._cache: dict[tuple[str, str, str], dict[str, Any] | None] = {}

    # -- cache -------------------------------------------------------------------------------
    def observe(self, kind: str, event_type: str | None, obj: dict[str, Any]) -> None:
        """Record a watch event's object (DELETED drops it)."""
        meta = obj.get("metadata", {})
        key = (kind, meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self._cache.pop(key, None)  # the next read asks the server, and remembers the 404
            return
        old = self._cache.get(key)
        if old is not None and _rv(old) > _rv(obj):
            return  # an older event than what our own write already told us
        self._cache[key] = obj

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self._cache.pop((kind, namespace, name), None)

    def forget_names(self, namespace: str, names: set[str]) -> None:
        """Drop every watched kind's entry with one of `names` (a deleted owner and its children)."""
        for kind in WATCHED_KINDS:
            for name in names:
                self._cache.pop((kind, namespace, name), None)

    def _remember(self, kind: str, namespace: str, name: str, obj: dict[str, Any] | None) -> None:
        if self.use_cache and kind in WATCHED_KINDS:
            key = (kind, namespace, name)
            old = self._cache.get(key)
            if obj is None or old is None or _rv(obj) >= _rv(old):
                self._cache[key] = obj

    def _path(self, kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        prefix, plural = KINDS[kind]
        path = f"{prefix}/namespaces/{namespace}/{plural}"
        if name:
            path += f"/{name}"
        if sub:
            path += f"/{sub}"
        return path

    def _call(self, method: str, path: str, body: Any = None, content_type: str | None = None,
              query: list[tuple[str, str]] | None = None, timeout: float = 30) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        resp = self.api.call_api(
            path, method, header_params=headers, body=body, query_params=query or [],
            auth_settings=["BearerToken"], response_type="object", _return_http_data_only=True,
            _preload_content=True, _request_timeout=timeout,
        )
        return resp

    def get(self, kind: str, namespace: str, name: str, uncached_absent: bool = False) -> dict[str, Any] | None:
        """The object, or None. `uncached_absent`: the caller knows it cannot exist unless we made it
        (a brand-new owner), so a cache miss means absent without asking the server."""
        key = (kind, namespace, name)
        if self.use_cache and kind in WATCHED_KINDS and key in self._cache:
            return self._cache[key]
        if uncached_absent and self.use_cache and kind in WATCHED_KINDS:
            self._cache[key] = None
            return None
        obj = self._read(self._path(kind, namespace, name))
        self._remember(kind, namespace, name, obj)
        return obj

    def _read(self, path: str, timeout: float = 30) -> dict[str, Any] | None:
        """GET `path`; None when the server says 404."""
        try:
            obj: dict[str, Any] = self._call("GET", path, timeout=timeout)
        except ApiException as e:
            if e.status != 404:
                raise
            return None
        return obj

    def list(self, kind: str, namespace: str, label_selector: str, limit: int = 50,
             timeout: float = 30) -> list[dict[str, Any]]:
        """The objects matching `label_selector` (at most `limit`), always from the server (never cached)."""
        if kind not in LISTED_KINDS:
            raise ValueError(f"{kind} is not in k8s.LISTED_KINDS (the chart grants list only for those)")
        resp = self._call("GET", self._path(kind, namespace),
                          query=[("labelSelector", label_selector), ("limit", str(limit))], timeout=timeout)
        items = (resp or {}).get("items") or []
        return [i for i in items if isinstance(i, dict)]

    # -- Leases (leader election; see controller/leader.py) --------------------------------------
    def _lease_path(self, namespace: str, name: str | None = None) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases" + (f"/{name}" if name else "")

    def get_lease(self, namespace: str, name: str, timeout: float = 30) -> dict[str, Any] | None:
        return self._read(self._lease_path(namespace, name), timeout=timeout)

    def create_lease(self, lease: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        """POST; an ApiException 409 (AlreadyExists) when another candidate created it first."""
        result: dict[str, Any] = self._call("POST", self._lease_path(lease["metadata"]["namespace"]), body=lease,
                                            timeout=timeout)
        opmetrics.API_WRITES.labels(kind="Lease", verb="create").inc()
        return result

    def update_lease(self, lease: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        """PUT with the lease's metadata.resourceVersion: an ApiException 409 when anyone wrote it since."""
        meta = lease["metadata"]
        result: dict[str, Any] = self._call("PUT", self._lease_path(meta["namespace"], meta["name"]), body=lease,
                                            timeout=timeout)
        opmetrics.API_WRITES.labels(kind="Lease", verb="update").inc()
        return result

    def get_fresh(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The server's copy, never the cache's: before creating an object, to be sure no one else's of
        that name exists (a cached "absent" may be old, and the watches only see objects with our
        label). The cache learns only of a found object: an "absent" answer must not replace a create
        of ours still in flight (see controller/executor.py), or a concurrent pass would create it again."""
        obj = self._read(self._path(kind, namespace, name))
        if obj is not None:
            self._remember(kind, namespace, name, obj)
        return obj

    def apply(self, obj: dict[str, Any], manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply, forced: only ever called for objects this operator controls (the
        planner leaves anyone else's alone, and the executor checks before creating)."""
        meta = obj["metadata"]
        result = self._call(
            "PATCH", self._path(obj["kind"], meta["namespace"], meta["name"]), body=obj,
            content_type="application/apply-patch+yaml",
            query=[("fieldManager", manager), ("force", "true")])
        opmetrics.API_WRITES.labels(kind=obj["kind"], verb="apply").inc()
        self._remember(obj["kind"], meta["namespace"], meta["name"], result)
        return result

    def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            self._call("DELETE", self._path(kind, namespace, name),
                       body={"propagationPolicy": "Background"})
            opmetrics.API_WRITES.labels(kind=kind, verb="delete").inc()
        except ApiException as e:
            if e.status != 404:
                raise
        self.forget(kind, namespace, name)  # next read asks the server (deletion may take a moment)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any],
                     resource_version: str | None = None) -> dict[str, Any]:
        """Merge-patch `.status`. With `resource_version` the write is conditional (optimistic
        concurrency): it applies only to that version of the object, else `Conflict` and nothing changed."""
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            result = self._call("PATCH", self._path(KIND, namespace, name, "status"), body=body,
                                content_type="application/merge-patch+json")
        except ApiException as e:
            if e.status == 409 and resource_version is not None:
                raise Conflict(f"{KIND} {namespace}/{name} changed since resourceVersion {resource_version}") from e
            raise
        opmetrics.API_WRITES.labels(kind=KIND, verb="status").inc()
        self._remember(KIND, namespace, name, result)
        return result

    def patch_merge(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        result = self._call("PATCH", self._path(kind, namespace, name), body=patch,
                            content_type="application/merge-patch+json")
        opmetrics.API_WRITES.labels(kind=kind, verb="patch").inc()
        self._remember(kind, namespace, name, result)
        return result

    def event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the ModelDeployment (what `kubectl describe mdep` shows)."""
        meta = owner["metadata"]
        ts = now_rfc3339()
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid")},
            "reason": reason, "message": message[:1024], "type": type_,
            "source": {"component": "modeldeploy"}, "reportingComponent": "modeldeploy",
            "reportingInstance": self.instance, "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
        }
        try:
            self._call("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=body)
        except ApiException as e:  # an Event is best effort; never fail a reconcile over it
            # A namespace being deleted refuses new Events (403 NamespaceTerminating): it is going away, and the
            # object with it - not a permission problem worth a warning.
            terminating = e.status == 403 and "NamespaceTerminating" in str(e.body)
            (log.debug if terminating else log.warning)(
                "could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"],
                "namespace terminating" if terminating else e.reason)
