"""The real-node tier: the images we build, running on a real kubelet, the operator installed by Helm.

Fixtures, all real:
- `node_images`: the operator image and three model versions (hack/images.py, cached by their
  inputs), imported into the node's containerd;
- `incluster_operator`: the chart installed with that image (its own ServiceAccount and RBAC);
- `prometheus_sd`: Prometheus (built with Kubernetes SD) discovering the pods through the API server with
  manifests/monitoring/prometheus-scrape-config.yaml (the shipped file), listening on the pod
  bridge so the operator's pod can query it;
- `real_ns`: a namespace under Pod Security "restricted" (enforced) whose pods go to the real node.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from localcluster import LocalCluster, bin_dir
from localnet import NODE_IP
from localnode import real_pods_namespace_metadata
from localoperator import InClusterOperator
from localprom import PrometheusServer, cluster_prometheus
from tests.conftest import wait_for
from tests.integration.test_operator import Cluster

REPO = Path(__file__).resolve().parents[2]
# Small requests: the node has 2 cores for the control plane, Prometheus and every model pod.
RESOURCES = {"requests": {"cpu": "50m", "memory": "160Mi"}, "limits": {"memory": "1Gi"}}


@dataclass
class Images:
    operator: str
    models: dict[str, str]        # "v1" -> image name
    versions: dict[str, str]      # "v1" -> model version the image's /predict reports

    def model(self, v: str, **extra: Any) -> dict[str, Any]:
        """A spec.model for version `v` (extra: env, port, ...). `env` is always set: a merge patch
        without it keeps the previous revision's (a fault injected into v2 would stay for v3)."""
        return {"image": self.models[v], "bento": f"room_price:{v}", "resources": RESOURCES, "env": [], **extra}


@pytest.fixture(scope="session")
def node_images(cluster: LocalCluster) -> Images:
    from images import OPERATOR_TAG, import_test_models, operator_image

    node = cluster.real_node()
    node.import_image(operator_image())
    models, versions = import_test_models(node)
    return Images(OPERATOR_TAG, models, versions)


# Package scope: the in-cluster operator watches every namespace, so it must be gone before the integration tier,
# whose CLI tests patch status by hand on objects no operator may touch (a session scope left it reconciling them).
@pytest.fixture(scope="package")
def incluster_operator(crd: str, kubeconfig: str, node_images: Images) -> Iterator[InClusterOperator]:
    op = InClusterOperator(kubeconfig, node_images.operator, resync_seconds=3).start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture(scope="package")
def prometheus_sd(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
                       ) -> Iterator[PrometheusServer]:
    prom = cluster_prometheus(cluster.server, cluster.state_dir / "pki", cluster.bins or bin_dir(),
                              tmp_path_factory.mktemp("prometheus"), NODE_IP).start()
    try:
        yield prom
    finally:
        prom.stop()


@pytest.fixture
def real_ns(api_client: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(api_client)
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    meta = real_pods_namespace_metadata()
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, **meta)))

    def sa_ready() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
            return True
        except ApiException:
            return False

    wait_for(sa_ready, 30, what=f"default ServiceAccount in {name}")
    try:
        yield name
    finally:
        core.delete_namespace(name)


class RealCluster(Cluster):
    """The integration tier's helper plus what only real pods have."""

    def pods(self, selector: str = "") -> list[client.V1Pod]:
        return list(self.core.list_namespaced_pod(self.ns, label_selector=selector).items)

    def ready_pods(self, selector: str = "") -> list[client.V1Pod]:
        return [p for p in self.pods(selector) if p.status.phase == "Running" and not p.metadata.deletion_timestamp
                and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]

    def service_url(self, name: str) -> str:
        svc = self.core.read_namespaced_service(name, self.ns)
        return f"http://{svc.spec.cluster_ip}:{svc.spec.ports[0].port}"

    def wait_service_answers(self, name: str, timeout: float = 30) -> str:
        """The Service's URL once its VIP answers (kube-proxy programs a new Service within a second or so)."""
        url = self.service_url(name)

        def answers() -> bool:
            try:
                return httpx.get(url + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, timeout, what=f"{url} answering (kube-proxy programmed the VIP)")
        return url

    def events_text(self) -> str:
        """Every Event in the namespace, oldest first (for failure messages)."""
        evs = sorted(self.core.list_namespaced_event(self.ns).items,
                     key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
        return "\n".join(f"{e.last_timestamp} {e.involved_object.name} {e.reason}: {e.message}" for e in evs)

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status", {})  # type: ignore[no-any-return]


@pytest.fixture
def rk(api_client: client.ApiClient, real_ns: str, incluster_operator: InClusterOperator) -> RealCluster:
    return RealCluster(api_client, real_ns)

