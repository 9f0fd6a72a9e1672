"""The peers of the side-by-side benchmark start and reconcile against the real control plane.

Flagger v1.44.0 and Argo Rollouts v1.10.1, built from their Go modules (hack/build-binaries.sh),
run out of cluster (hack/peers.py) with their CRDs from the same modules. kwok makes the pods
they create Ready, which is all either needs to reconcile one object: Flagger initialises a
Canary (its primary Deployment, Services and HTTPRoute), Argo Rollouts a Rollout (its
ReplicaSet). The benchmark (tests/benchmarks/bench_peers.py) runs them on the real node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from localcluster import LocalCluster, free_port
from peers import ArgoRollouts, Flagger
from tests.conftest import wait_for
from traefik import gateway_api_crds

pytestmark = pytest.mark.cluster

LABELS = {"app": "price"}
POD = {"metadata": {"labels": LABELS},
       "spec": {"containers": [{"name": "model", "image": "registry.example/room-price:v1",
                                "ports": [{"containerPort": 3000}]}]}}


@pytest.fixture(scope="module")
def gateway_crds(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    for path, name in gateway_api_crds(tmp_path_factory.mktemp("gateway-crds")):
        cluster.install_crd(path, name)


def _get(custom: client.CustomObjectsApi, group: str, version: str, ns: str, plural: str, name: str
         ) -> dict[str, Any] | None:
    try:
        return custom.get_namespaced_custom_object(group, version, ns, plural, name)  # type: ignore[no-any-return]
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def test_flagger_initialises_a_canary(cluster: LocalCluster, api_client: client.ApiClient, namespace: str,
                                      gateway_crds: None, tmp_path: Path) -> None:
    apps, custom = client.AppsV1Api(api_client), client.CustomObjectsApi(api_client)
    # Nothing listens there: initialising a Canary queries no metrics.
    flagger = Flagger(cluster.kubeconfig, namespace, tmp_path, prometheus=f"http://127.0.0.1:{free_port()}")
    flagger.install_crds(cluster.install_crd)
    apps.create_namespaced_deployment(namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "price", "labels": LABELS},
        "spec": {"replicas": 2, "selector": {"matchLabels": LABELS}, "template": POD}})
    custom.create_namespaced_custom_object("flagger.app", "v1beta1", namespace, "canaries", {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "price"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "price"},
                 "service": {"port": 3000, "gatewayRefs": [{"name": "modeldeploy", "namespace": "gateway"}]},
                 "analysis": {"interval": "10s", "threshold": 1, "stepWeights": [20, 40, 60, 80]}}})
    with flagger:
        def initialised() -> bool:
            canary = _get(custom, "flagger.app", "v1beta1", namespace, "canaries", "price") or {}
            return canary.get("status", {}).get("phase") == "Initialized"

        try:
            wait_for(initialised, 90, what="Canary phase Initialized")
        except AssertionError as e:
            raise AssertionError(f"{e}\nflagger log:\n{flagger.log_tail()}") from None
        primary = apps.read_namespaced_deployment("price-primary", namespace)
        assert primary.status.ready_replicas == 2
        assert apps.read_namespaced_deployment("price", namespace).spec.replicas == 0  # scaled down to the primary
        route = _get(custom, "gateway.networking.k8s.io", "v1", namespace, "httproutes", "price")
        assert route is not None
        weights = {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}
        assert weights == {"price-primary": 100, "price-canary": 0}, weights


def test_argo_rollouts_reconciles_a_rollout(cluster: LocalCluster, api_client: client.ApiClient, namespace: str,
                                            tmp_path: Path) -> None:
    apps, custom = client.AppsV1Api(api_client), client.CustomObjectsApi(api_client)
    argo = ArgoRollouts(cluster.kubeconfig, namespace, tmp_path)
    argo.install_crds(cluster.install_crd)
    custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", namespace, "rollouts", {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "price"},
        "spec": {"replicas": 2, "selector": {"matchLabels": LABELS}, "template": POD,
                 "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "10s"}}]}}}})
    with argo:
        def healthy() -> bool:
            ro = _get(custom, "argoproj.io", "v1alpha1", namespace, "rollouts", "price") or {}
            return ro.get("status", {}).get("phase") == "Healthy"

        try:
            wait_for(healthy, 90, what="Rollout phase Healthy")
        except AssertionError as e:
            raise AssertionError(f"{e}\nargo rollouts log:\n{argo.log_tail()}") from None
        rss = apps.list_namespaced_replica_set(namespace).items
        assert len(rss) == 1 and rss[0].metadata.owner_references[0].kind == "Rollout"
        assert rss[0].status.ready_replicas == 2
