"""More than one operator replica: kopf peering picks one, and only that one writes.

Two real operator processes share a ClusterKopfPeering (its CRD ships in the Helm chart). The
higher-priority one reconciles; the other stands by (kopf pauses its watches, our controller
gate stops its resyncs). When the active one stops, the other takes over.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from localcluster import LocalCluster
from localoperator import OperatorProcess
from tests.conftest import wait_for
from tests.integration.test_operator import Cluster, mdep

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
PEERING = "modeldeploy-test-peering"


def test_only_the_highest_priority_replica_works_and_the_other_takes_over(
    api_client: client.ApiClient, namespace: str, crd: str, kubeconfig: str, cluster: LocalCluster,
    tmp_path: Path,
) -> None:
    cluster.install_crd(REPO / "charts/modeldeploy/crds/kopf.dev_peerings.yaml", "clusterkopfpeerings.kopf.dev")
    custom = client.CustomObjectsApi(api_client)
    try:
        custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", {
            "apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING}})
    except client.ApiException as e:
        if e.status != 409:
            raise

    def replica(ident: str, prio: int) -> OperatorProcess:
        return OperatorProcess(kubeconfig, tmp_path / f"{ident}.log", extra_env={
            "MODELDEPLOY_PEERING": PEERING, "MODELDEPLOY_PEERING_IDENTITY": ident,
            "MODELDEPLOY_PEERING_PRIORITY": str(prio)})

    low, high = replica("replica-low", 10), replica("replica-high", 20)
    try:
        low.start()
        high.start()
        k = Cluster(api_client, namespace)

        def both_registered() -> bool:
            status = custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", PEERING).get("status")
            return {"replica-low", "replica-high"} <= set(status or {})

        wait_for(both_registered, 30, what="both replicas in the peering object")
        k.create(mdep("peered", rollout={"strategy": "Rolling"}))
        wait_for(lambda: k.healthy("peered"), 60, what="Healthy")
        assert high.writes() > 0
        assert low.writes() == 0, "the standby replica wrote"

        high.stop()  # clean shutdown removes its peering entry; the other takes over
        k.patch("peered", {"model": {"image": "registry.example/room-price:v2", "bento": "room_price:v2"}})
        wait_for(lambda: k.get("peered").get("status", {}).get("stable", {}).get("bento") == "room_price:v2"
                 and k.healthy("peered"), 60, what="the remaining replica rolled v2")
        assert low.writes() > 0
    finally:
        high.stop()
        low.stop()
        custom.delete_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", PEERING)
