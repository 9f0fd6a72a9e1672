"""The local control plane is a real one: controllers, scheduler, GC, HPA and CRDs all work."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.conftest import wait_for

pytestmark = pytest.mark.cluster


def _deployment(name: str, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="app", image="example.invalid/app:1")]),
            ),
        ),
    )


def _ready_pods(core: client.CoreV1Api, ns: str, selector: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(ns, label_selector=selector).items
    return [
        p for p in pods
        if p.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
    ]


def test_kwok_node_is_ready(api_client: client.ApiClient) -> None:
    node = client.CoreV1Api(api_client).read_node("kwok-node-0")  # the real node: tests/e2e/test_node.py
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    assert not node.spec.taints  # every pod not sent to the real node lands here


def test_version_is_pinned_release(api_client: client.ApiClient) -> None:
    info = client.VersionApi(api_client).get_code()
    assert info.git_version.startswith("v1.34."), info.git_version


def test_deployment_pods_become_ready_then_are_garbage_collected(
    api_client: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    apps.create_namespaced_deployment(namespace, _deployment("web", 3))

    ready = wait_for(lambda: len(_ready_pods(core, namespace, "app=web")) == 3 and
                     _ready_pods(core, namespace, "app=web"), 60, what="3 Ready pods")
    assert all(p.spec.node_name == "kwok-node-0" for p in ready)
    assert all(p.status.pod_ip for p in ready)
    wait_for(lambda: apps.read_namespaced_deployment("web", namespace).status.ready_replicas == 3,
             30, what="deployment status readyReplicas=3")
    assert len(apps.list_namespaced_replica_set(namespace, label_selector="app=web").items) == 1

    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Background")
    wait_for(lambda: not apps.list_namespaced_replica_set(namespace, label_selector="app=web").items,
             60, what="ReplicaSet garbage-collected")
    wait_for(lambda: not core.list_namespaced_pod(namespace, label_selector="app=web").items,
             60, what="pods garbage-collected")


def test_hpa_v2_is_accepted_and_served(api_client: client.ApiClient, namespace: str) -> None:
    apps, autoscaling = client.AppsV1Api(api_client), client.AutoscalingV2Api(api_client)
    apps.create_namespaced_deployment(namespace, _deployment("scaled", 1))
    hpa = client.V2HorizontalPodAutoscaler(
        metadata=client.V1ObjectMeta(name="scaled"),
        spec=client.V2HorizontalPodAutoscalerSpec(
            scale_target_ref=client.V2CrossVersionObjectReference(api_version="apps/v1", kind="Deployment",
                                                                  name="scaled"),
            min_replicas=2, max_replicas=5,
            metrics=[client.V2MetricSpec(type="Resource", resource=client.V2ResourceMetricSource(
                name="cpu", target=client.V2MetricTarget(type="Utilization", average_utilization=70)))],
        ),
    )
    autoscaling.create_namespaced_horizontal_pod_autoscaler(namespace, hpa)
    got = autoscaling.read_namespaced_horizontal_pod_autoscaler("scaled", namespace)
    assert got.spec.max_replicas == 5
    # The real HPA controller acts on it: below minReplicas it scales the target up to 2.
    wait_for(lambda: apps.read_namespaced_deployment("scaled", namespace).spec.replicas == 2,
             60, what="HPA raising replicas to minReplicas")
    with pytest.raises(ApiException) as err:
        bad = client.V2HorizontalPodAutoscaler(
            metadata=client.V1ObjectMeta(name="bad"),
            spec=client.V2HorizontalPodAutoscalerSpec(
                scale_target_ref=hpa.spec.scale_target_ref, min_replicas=3, max_replicas=2))
        autoscaling.create_namespaced_horizontal_pod_autoscaler(namespace, bad)
    assert err.value.status == 422


def test_crd_is_established_and_served(api_client: client.ApiClient, namespace: str) -> None:
    ext = client.ApiextensionsV1Api(api_client)
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.test.modeldeploy.io"},
        "spec": {
            "group": "test.modeldeploy.io", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object", "properties": {
                    "size": {"type": "integer", "minimum": 1}}}}}}}],
        },
    }
    ext.create_custom_resource_definition(crd)
    try:
        def established() -> bool:
            got = ext.read_custom_resource_definition("widgets.test.modeldeploy.io")
            return any(c.type == "Established" and c.status == "True" for c in got.status.conditions or [])

        wait_for(established, 30, what="CRD Established")
        custom = client.CustomObjectsApi(api_client)

        def create(size: int) -> dict:
            return custom.create_namespaced_custom_object("test.modeldeploy.io", "v1", namespace, "widgets", {
                "apiVersion": "test.modeldeploy.io/v1", "kind": "Widget",
                "metadata": {"name": f"w{size}"}, "spec": {"size": size}})

        # Discovery can lag Established by a moment: poll the first create.
        wait_for(lambda: _try(lambda: create(3)), 30, what="first custom object created")
        assert custom.get_namespaced_custom_object("test.modeldeploy.io", "v1", namespace, "widgets", "w3")[
            "spec"]["size"] == 3
        with pytest.raises(ApiException) as err:
            create(0)
        assert err.value.status == 422 and "spec.size" in err.value.body
    finally:
        ext.delete_custom_resource_definition("widgets.test.modeldeploy.io")


def _try(fn):  # type: ignore[no-untyped-def]
    try:
        return fn() or True
    except ApiException as e:
        if e.status == 404:
            return False
        raise
