"""The `gatewayAPI` router's HTTPRoute carries real traffic: Traefik as the Gateway, the real node's pods behind it.

Traefik (hack/traefik.py) runs beside the cluster with its Kubernetes Gateway provider; the
ModelDeployment's HTTPRoute names its Gateway. Clients send every request through Traefik's
listener on 127.0.0.1, and each answer names the model version that served it
(`x-model-version`). The test reads the weights from the HTTPRoute itself (what the data plane
is told), never from the operator's status, and compares them with the split the clients saw.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes.client.rest import ApiException

from canarylab import ServiceLoad
from localcluster import LocalCluster
from localprom import PrometheusServer
from tests.conftest import wait_for
from tests.e2e.conftest import Images, RealCluster
from tests.e2e.test_canary import FAULTS
from tests.integration.test_operator import mdep
from traefik import TraefikGateway

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.prometheus, pytest.mark.slow]

# Points by which the observed share may differ from the route's weight: Traefik's weighted
# round robin is exact per request; what is left is the second after a weight change and the
# requests in flight across it.
TOLERANCE = 5


@pytest.fixture(scope="module")
def traefik(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TraefikGateway]:
    gw = TraefikGateway(cluster.kubeconfig, workdir=tmp_path_factory.mktemp("traefik"))
    gw.install_crds(cluster.install_crd)
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


def route_weights(rk: RealCluster, name: str) -> tuple[int, int] | None:
    """(stable, canary) weights of the HTTPRoute the operator wrote, or None before it exists."""
    try:
        route = rk.custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", rk.ns, "httproutes", name)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    refs = {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}
    return refs[f"{name}-stable"], refs[f"{name}-canary"]


def _answers_through(gw: TraefikGateway) -> str | None:
    try:
        r = httpx.post(gw.url + "/predict", json={"rows": [[62.0, 3.0, 1.0]]}, timeout=3)
    except httpx.HTTPError:
        return None
    return r.headers.get("x-model-version") if r.status_code == 200 else None


def test_observed_split_follows_the_httproute_weights_and_rollback_returns_all_traffic(
        rk: RealCluster, node_images: Images, prometheus_sd: PrometheusServer, traefik: TraefikGateway,
        tmp_path: Path) -> None:
    name = "price"
    router = {"gatewayAPI": {"parentRefs": [traefik.parent_ref()]}}
    analysis = {"prometheus": {"address": prometheus_sd.url, "timeout": "2s"}, "minRequests": 10,
                "failureLimit": 1, "errorLimit": 2, "metrics": [{"name": "error-rate", "max": 0.05}]}
    rk.create(mdep(name, model=node_images.model("v1"), rollout={
        "strategy": "Canary", "canary": {"steps": [20, 50, 80], "interval": "10s", "trafficRouter": router},
        "analysis": analysis}))
    wait_for(lambda: rk.healthy(name), 180, what="v1 Healthy")
    wait_for(lambda: traefik.route_accepted(rk.ns, name), 60, what="HTTPRoute accepted by Traefik")
    v1, v2, v3 = (node_images.versions[v] for v in ("v1", "v2", "v3"))
    # Traefik answers through the Gateway route, from the stable's pods.
    assert wait_for(lambda: _answers_through(traefik), 30, what="an answer through the Gateway") == v1
    load = ServiceLoad(traefik.url, rate_per_second=40, max_seconds=300).start()
    try:
        # -- a healthy canary, step by step --------------------------------------------------
        changes: list[tuple[float, int]] = []  # (when the route's canary weight changed, weight)

        def watch() -> tuple[int, int] | None:
            w = route_weights(rk, name)
            if w is not None and (not changes or changes[-1][1] != w[1]):
                changes.append((time.monotonic(), w[1]))
            return w

        t_apply = time.monotonic()
        rk.patch(name, {"model": node_images.model("v2")})

        def promoted() -> bool:
            w = watch()
            st = rk.status(name)
            return w == (100, 0) and st.get("phase") == "Healthy" \
                and st.get("stable", {}).get("image", "").endswith(":v2")

        wait_for(promoted, 240, interval=0.1, what="v2 promoted with the route back at 100/0")
        t_done = time.monotonic()
        assert load.failures(since=t_apply) == {}, load.by_version(since=t_apply)
        shares = []
        for (t0, w), (t1, _) in zip(changes, [*changes[1:], (t_done, 0)], strict=True):
            if w and t1 - t0 > 4:
                shares.append((w, load.share(v2, since=t0 + 1, until=t1), len(load.window(t0 + 1, t1))))
        print(f"\nroute weight -> observed v2 share (requests): {shares}")
        assert [w for w, _, _ in shares] == [20, 50, 80], changes
        for w, share, _ in shares:
            assert share is not None and abs(share - w) <= TOLERANCE, shares
        # After the promotion every answer comes from v2, the new stable.
        t_after = time.monotonic()
        wait_for(lambda: len(load.window(t_after)) >= 40, 30, what="40 answers after the promotion")
        assert set(load.by_version(since=t_after + 1)) == {v2}, load.by_version(since=t_after)

        # -- a faulty canary: rollback moves all traffic back --------------------------------
        t_faulty = time.monotonic()
        rk.patch(name, {"model": node_images.model("v3", env=FAULTS["errors"])})
        wait_for(lambda: rk.status(name).get("phase") == "RolledBack", 120, interval=0.1, what="RolledBack")
        wait_for(lambda: route_weights(rk, name) == (100, 0), 30, interval=0.1, what="route back at 100/0")
        t_back = time.monotonic()
        seen_v3 = load.by_version(since=t_faulty).get(v3, {})
        assert seen_v3.get("failed", 0) > 0, load.by_version(since=t_faulty)  # the fault reached clients...
        assert set(load.failures(since=t_faulty)) == {v3}, load.by_version(since=t_faulty)  # ...and only v3's
        wait_for(lambda: len(load.window(t_back + 1)) >= 80, 30, what="80 answers after the rollback")
        after = load.by_version(since=t_back + 1)
        assert set(after) == {v2} and after[v2]["failed"] == 0, after
        print(f"faulty v3: {seen_v3}; after the rollback: {after}; v1 share never seen after promotion: "
              f"{v1 not in load.by_version(since=t_after + 1)}")
    finally:
        load.stop()
