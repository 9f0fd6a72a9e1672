"""The real node: model pods built here run on a kubelet under Pod Security "restricted", and a
Service's traffic reaches them through kube-proxy."""

from __future__ import annotations

import time

import httpx
import pytest
from kubernetes import client

from localnode import NODE_LABEL, NODE_NAME, TAINT_KEY
from tests.conftest import wait_for
from tests.e2e.conftest import Images, RealCluster
from tests.integration.test_operator import mdep

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.slow]


def test_real_node_is_ready_tainted_and_beside_kwok(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    node = core.read_node(NODE_NAME)
    assert node.metadata.labels[NODE_LABEL] == "real"
    assert [t.key for t in node.spec.taints or []] == [TAINT_KEY]
    assert node.status.node_info.container_runtime_version.startswith("containerd://")
    assert node.status.node_info.kubelet_version == "v1.34.4"
    ready = {n.metadata.name: any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)
             for n in core.list_node().items}
    assert ready == {NODE_NAME: True, "kwok-node-0": True}


def test_model_pods_run_restricted_and_serve_through_the_service(rk: RealCluster, node_images: Images) -> None:
    ns = rk.core.read_namespace(rk.ns)
    assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    t0 = time.monotonic()
    rk.create(mdep("price", model=node_images.model("v1")))
    wait_for(lambda: rk.healthy("price"), 180, what="v1 Healthy with Running pods")
    ready_after = time.monotonic() - t0
    pods = rk.ready_pods("modeldeploy.io/name=price")
    assert len(pods) == 2
    for p in pods:
        assert p.spec.node_name == NODE_NAME
        status = p.status.container_statuses[0]
        assert status.container_id.startswith("containerd://") and status.ready
        assert status.image.endswith("room-price:v1")
        assert p.spec.security_context.run_as_user == 1034  # BentoML's user, numeric for runAsNonRoot
    url = rk.wait_service_answers("price")
    versions = set()
    with httpx.Client(timeout=5, headers={"Connection": "close"}) as c:
        for _ in range(20):
            r = c.post(url + "/predict", json={"rows": [[62.0, 3.0, 1.0]]})
            assert r.status_code == 200, r.text
            versions.add(r.headers["x-model-version"])
    assert versions == {node_images.versions["v1"]}
    # The API server reaches the kubelet (logs), as kubectl logs would.
    log = rk.core.read_namespaced_pod_log(pods[0].metadata.name, rk.ns, container="model")
    assert "Starting production HTTP BentoServer" in log, log[-2000:]  # read through the kubelet
    print(f"\nkubectl apply -> 2 pods Ready: {ready_after:.1f}s")


def test_spec_model_port_is_where_bentoml_listens(rk: RealCluster, node_images: Images) -> None:
    """spec.model.port reaches the server (issue 11): probes, containerPort, Service and BentoML agree."""
    rk.create(mdep("porty", replicas=1, model=node_images.model("v1", port=8080)))
    wait_for(lambda: rk.healthy("porty"), 180, what="Healthy on port 8080")
    pod = rk.ready_pods("modeldeploy.io/name=porty")[0]
    assert pod.spec.containers[0].ports[0].container_port == 8080
    with httpx.Client(timeout=5) as c:  # the pod itself, on the pod bridge: BentoML listens there
        r = c.post(f"http://{pod.status.pod_ip}:8080/predict", json={"rows": [[62.0, 3.0, 1.0]]})
        assert r.status_code == 200, r.text
        with pytest.raises(httpx.ConnectError):
            c.get(f"http://{pod.status.pod_ip}:3000/livez")
    url = rk.wait_service_answers("porty")
    assert httpx.post(url + "/predict", json={"rows": [[62.0, 3.0, 1.0]]}, timeout=5).status_code == 200


def test_pods_elsewhere_stay_on_kwok(api_client: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(api_client)
    core = client.CoreV1Api(api_client)
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fake"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "fake"}},
                    "template": {"metadata": {"labels": {"app": "fake"}},
                                 "spec": {"containers": [{"name": "c", "image": "registry.example/none:1"}]}}}}
    apps.create_namespaced_deployment(namespace, dep)
    pods = wait_for(lambda: [p for p in core.list_namespaced_pod(namespace).items if p.spec.node_name], 30,
                    what="the pod scheduled")
    assert pods[0].spec.node_name == "kwok-node-0"

