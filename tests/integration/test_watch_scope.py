"""The operator watches only its own children, filtered by the API server, and still sees every one.

On a shared cluster most Deployments and Services are not ours. A client-side label filter
would still make the API server send every one of them to the operator (its memory and CPU
would grow with the cluster); the list and watch requests must carry the label selector. What
the operator asked for is read from the API server's audit log (hack/localcluster.py records
list/watch requests for the child kinds), so this checks behaviour, not code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from localcluster import LocalCluster
from localoperator import OperatorProcess
from tests.conftest import exists, wait_for

pytestmark = pytest.mark.cluster

G, V, P = "modeldeploy.io", "v1alpha1", "modeldeployments"
SELECTOR = "app.kubernetes.io/managed-by=modeldeploy"
CHILD_RESOURCES = {"deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets"}
UNRELATED = 40


@pytest.fixture
def slow_resync_operator(crd: str, kubeconfig: str, tmp_path: Any) -> Iterator[OperatorProcess]:
    """An operator whose periodic resync never fires during the test: what it repairs, a watch told it."""
    op = OperatorProcess(kubeconfig, tmp_path / "operator.log", resync_seconds=600).start()
    try:
        yield op
    finally:
        op.stop()


def _operator_watch_requests(cluster: LocalCluster) -> list[dict[str, Any]]:
    """The list and watch requests the operator's watches (kopf's client) sent for the child kinds."""
    return [e for e in cluster.audit_events()
            if e.get("userAgent", "").startswith("kopf/") and e.get("verb") in ("list", "watch")
            and (e.get("objectRef") or {}).get("resource") in CHILD_RESOURCES]


def test_child_watches_are_filtered_by_the_server_and_still_see_our_children(
        cluster: LocalCluster, api_client: client.ApiClient, namespace: str,
        slow_resync_operator: OperatorProcess) -> None:
    apps, core, custom = client.AppsV1Api(api_client), client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    # Someone else's objects, with the same shape and even our name label, but not managed by us.
    theirs = {"app.kubernetes.io/managed-by": "someone-else", "modeldeploy.io/name": "scoped"}
    for i in range(UNRELATED):
        apps.create_namespaced_deployment(namespace, {
            "metadata": {"name": f"other-{i}", "labels": theirs},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": f"other-{i}"}},
                     "template": {"metadata": {"labels": {"app": f"other-{i}"}},
                                  "spec": {"containers": [{"name": "c", "image": "registry.example/other:1"}]}}}})
        core.create_namespaced_service(namespace, {
            "metadata": {"name": f"other-{i}", "labels": theirs},
            "spec": {"selector": {"app": f"other-{i}"}, "ports": [{"port": 80}]}})
    body = {"apiVersion": f"{G}/{V}", "kind": "ModelDeployment", "metadata": {"name": "scoped"},
            "spec": {"model": {"image": "registry.example/room-price:v1"}, "replicas": 1,
                     "rollout": {"strategy": "Rolling"}}}
    custom.create_namespaced_custom_object(G, V, namespace, P, body)

    def healthy() -> bool:
        st = custom.get_namespaced_custom_object(G, V, namespace, P, "scoped").get("status") or {}
        return st.get("phase") == "Healthy"

    wait_for(healthy, 60, what="ModelDeployment Healthy")

    # Every list and watch of a child kind asked the server for our objects only.
    requests = _operator_watch_requests(cluster)
    assert {e["objectRef"]["resource"] for e in requests} == CHILD_RESOURCES, \
        f"the audit log has no list/watch by the operator for some child kinds: {requests[:3]}"
    unfiltered = [e["requestURI"] for e in requests
                  if SELECTOR not in parse_qs(urlsplit(e["requestURI"]).query).get("labelSelector", [])]
    assert not unfiltered, f"{len(unfiltered)} child list/watch requests without the label selector: {unfiltered[:4]}"

    # Our own children are still seen: deleted by hand, each is back within seconds, long before a
    # resync (600 s) could have noticed, so a watch event told the operator.
    core.delete_namespaced_service("scoped", namespace)
    wait_for(lambda: exists(lambda: core.read_namespaced_service("scoped", namespace)), 10,
             what="Service recreated after a watch event")
    apps.delete_namespaced_deployment("scoped", namespace)
    wait_for(lambda: exists(lambda: apps.read_namespaced_deployment("scoped", namespace)), 10,
             what="Deployment recreated after a watch event")
    # And nothing of theirs was touched.
    assert all(d.metadata.labels == theirs for d in apps.list_namespaced_deployment(
        namespace, label_selector="app.kubernetes.io/managed-by=someone-else").items)
