"""Kubernetes clients for the real local control plane, and a fresh namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from localcluster import LocalCluster
from localoperator import OperatorProcess
from tests.conftest import wait_for


@pytest.fixture(scope="session")
def api_client(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    """A new namespace (with its default ServiceAccount ready); deleted after the test."""
    core = client.CoreV1Api(api_client)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

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


REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"


@pytest.fixture(scope="session")
def crd(api_client: client.ApiClient, cluster: LocalCluster) -> str:
    """The ModelDeployment CRD installed with kubectl, Established and served."""
    cluster.install_crd(CRD_FILE, "modeldeployments.modeldeploy.io")
    custom = client.CustomObjectsApi(api_client)
    wait_for(lambda: _listable(custom), 30, what="ModelDeployment API served")
    return "modeldeployments.modeldeploy.io"


def _listable(custom: client.CustomObjectsApi) -> bool:
    try:
        custom.list_cluster_custom_object("modeldeploy.io", "v1alpha1", "modeldeployments")
        return True
    except ApiException:
        return False


@pytest.fixture(scope="module")
def operator(crd: str, kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator running as a subprocess for the module's tests (resync every 3 s)."""
    op = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log").start()
    try:
        yield op
    finally:
        op.stop()
