"""Kubernetes clients for the real local control plane, and a fresh namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

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
