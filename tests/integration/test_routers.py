"""Traffic routers write objects the real API server accepts, with the weights the canary is at.

The upstream Gateway API (v1.4.1) and Istio (v1.31.4) CRDs are installed into the local control
plane, so the HTTPRoute and VirtualService the operator writes are validated by their real
schemas. Steps advance on time here (no metrics), which is enough to check the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from localcluster import LocalCluster, bin_dir
from localoperator import OperatorProcess
from tests.conftest import wait_for
from tests.integration.test_operator import Cluster, mdep

pytestmark = pytest.mark.cluster

V2 = {"image": "registry.example/room-price:v2", "bento": "room_price:v2"}


@pytest.fixture(scope="module")
def router_crds(cluster: LocalCluster) -> None:
    crds = Path(bin_dir()) / "crds"
    cluster.install_crd(next(crds.glob("gateway-api-*.yaml")), "httproutes.gateway.networking.k8s.io")
    cluster.install_crd(next(crds.glob("istio-*.yaml")), "virtualservices.networking.istio.io")


@pytest.fixture
def k(api_client: client.ApiClient, namespace: str, operator: OperatorProcess, router_crds: None) -> Cluster:
    return Cluster(api_client, namespace)


def _get(k: Cluster, group: str, version: str, plural: str, name: str) -> dict[str, Any] | None:
    try:
        return k.custom.get_namespaced_custom_object(group, version, k.ns, plural, name)  # type: ignore[no-any-return]
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def _walk_canary(k: Cluster, router: dict[str, Any], weights: Any) -> list[tuple[int, int]]:
    """Deploy v1, apply v2, and collect the (stable, canary) weights the router object carries over time."""
    rollout = {"strategy": "Canary", "canary": {"steps": [20, 60], "interval": "3s", "trafficRouter": router}}
    k.create(mdep("routed", rollout=rollout))
    wait_for(lambda: k.healthy("routed"), 60, what="v1 Healthy")
    seen: list[tuple[int, int]] = []
    k.patch("routed", {"model": V2})

    def promoted() -> bool:
        w = weights()
        if w is not None and (not seen or seen[-1] != w):
            seen.append(w)
        st = k.get("routed").get("status", {})
        return st.get("stable", {}).get("image", "").endswith(":v2") and st.get("phase") == "Healthy" \
            and w == (100, 0)

    wait_for(promoted, 60, interval=0.1, what="promotion with the route back at 100/0")
    return seen


def test_gateway_api_httproute_weights(k: Cluster) -> None:
    router = {"gatewayAPI": {"parentRefs": [{"name": "public-gw"}], "hostnames": ["price.example.com"]}}

    def weights() -> tuple[int, int] | None:
        route = _get(k, "gateway.networking.k8s.io", "v1", "httproutes", "routed")
        if route is None:
            return None
        refs = {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}
        return refs["routed-stable"], refs["routed-canary"]

    seen = _walk_canary(k, router, weights)
    assert (80, 20) in seen and (40, 60) in seen and seen[-1] == (100, 0), seen
    route = _get(k, "gateway.networking.k8s.io", "v1", "httproutes", "routed")
    assert route is not None and route["spec"]["parentRefs"][0]["name"] == "public-gw"
    assert route["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    svc = k.core.read_namespaced_service("routed-canary", k.ns)
    assert svc.spec.selector == {"modeldeploy.io/name": "routed", "modeldeploy.io/track": "canary"}
    main = k.core.read_namespaced_service("routed", k.ns)
    assert main.spec.selector["modeldeploy.io/track"] == "stable"


def test_istio_virtualservice_weights(k: Cluster) -> None:
    router = {"istio": {"hosts": ["price.example.com"], "gateways": ["mesh"]}}

    def weights() -> tuple[int, int] | None:
        vs = _get(k, "networking.istio.io", "v1", "virtualservices", "routed")
        if vs is None:
            return None
        w = {r["destination"]["host"]: r["weight"] for r in vs["spec"]["http"][0]["route"]}
        return w["routed-stable"], w["routed-canary"]

    seen = _walk_canary(k, router, weights)
    assert (80, 20) in seen and (40, 60) in seen and seen[-1] == (100, 0), seen
    vs = _get(k, "networking.istio.io", "v1", "virtualservices", "routed")
    assert vs is not None and vs["spec"]["hosts"] == ["price.example.com"]


def test_switching_the_router_deletes_what_the_old_one_made(k: Cluster) -> None:
    """gatewayAPI -> istio -> replicas: each switch removes the previous router's objects."""
    gw = {"gatewayAPI": {"parentRefs": [{"name": "public-gw"}]}}
    k.create(mdep("switched", rollout={"strategy": "Canary", "canary": {"steps": [50], "interval": "3s",
                                                                        "trafficRouter": gw}}))
    wait_for(lambda: k.healthy("switched")
             and _get(k, "gateway.networking.k8s.io", "v1", "httproutes", "switched") is not None, 60,
             what="v1 Healthy with its HTTPRoute")
    k.patch("switched", {"rollout": {"canary": {"trafficRouter": {"gatewayAPI": None,
                                                                  "istio": {"hosts": ["switched"]}}}}})
    wait_for(lambda: _get(k, "gateway.networking.k8s.io", "v1", "httproutes", "switched") is None
             and _get(k, "networking.istio.io", "v1", "virtualservices", "switched") is not None, 60,
             what="HTTPRoute deleted, VirtualService created")
    k.patch("switched", {"rollout": {"canary": {"trafficRouter": {"istio": None, "replicas": {}}}}})

    def only_replicas() -> bool:
        names = {s.metadata.name for s in k.core.list_namespaced_service(k.ns).items}
        return _get(k, "networking.istio.io", "v1", "virtualservices", "switched") is None and \
            "switched-stable" not in names and "switched-canary" not in names and "switched" in names

    wait_for(only_replicas, 60, what="VirtualService and track Services deleted")
    assert k.get("switched")["status"]["routing"] == []
