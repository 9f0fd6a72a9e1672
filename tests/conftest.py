"""Session fixtures for the real tiers: the local cluster, its API clients and CRD, Prometheus servers.

Tests that need a tier ask for its fixture; the fixture starts the real component on loopback
(free ports) and stops it at teardown. Nothing here is a mock.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))

from localcluster import LocalCluster, wait_until  # noqa: E402
from localnet import read_sysctls  # noqa: E402
from localprom import PrometheusServer, ScrapeTarget  # noqa: E402


def wait_for(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; fail the test naming `what` after `timeout` seconds."""
    return wait_until(check, timeout, what or str(check), interval, error=AssertionError)


def exists(read: Callable[[], Any]) -> bool:
    """Whether `read()` (a kubernetes client read) finds its object: False on 404."""
    try:
        read()
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A fresh local cluster for the test session (its own state dir and ports): the control plane,
    kwok's fake node and the real node. Its teardown fails the session if the machine is not left
    as it was found (bridge, iptables chains, cgroups, sysctls)."""
    sysctls = read_sysctls()
    # MODELDEPLOY_TEST_NODE=0: control plane and kwok only (no root, no pod bridge), for running
    # control-plane tests while another session owns the machine's real node. CI never sets it.
    with_node = os.environ.get("MODELDEPLOY_TEST_NODE", "1") != "0"
    c = LocalCluster(state_dir=tmp_path_factory.mktemp("cluster"), node=with_node)
    try:
        c.up()
        yield c
    finally:
        c.down(quiet=True)
    if not with_node:
        return  # nothing of ours touched the bridge, iptables, cgroups or sysctls; another session's node may have
    left = c.leftovers() + [f"{k}={v} (was {sysctls[k]})" for k, v in read_sysctls().items() if sysctls.get(k) != v]
    assert not left, f"the cluster's teardown left these on the machine: {left}"


@pytest.fixture(scope="session")
def kubeconfig(cluster: LocalCluster) -> str:
    return str(cluster.kubeconfig)


@pytest.fixture(scope="session")
def kube_env(kubeconfig: str) -> dict[str, str]:
    """Environment for subprocesses (kubectl, helm, the operator) pointed at the test cluster."""
    env = dict(os.environ)
    env["KUBECONFIG"] = kubeconfig
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """Factory: `prometheus([ScrapeTarget(...)], scrape_interval="1s")` starts a real server."""
    started: list[PrometheusServer] = []

    def start(targets: list[ScrapeTarget], scrape_interval: str = "1s") -> PrometheusServer:
        d = tmp_path / f"prom{len(started)}"
        d.mkdir()
        p = PrometheusServer(targets, scrape_interval=scrape_interval, workdir=d)
        started.append(p)
        return p.start()

    try:
        yield start
    finally:
        for p in started:
            p.stop()


@pytest.fixture(scope="session")
def api_client(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


@contextlib.contextmanager
def temp_namespace(api_client: client.ApiClient, prefix: str = "t") -> Iterator[str]:
    """A new namespace named PREFIX-<random>, deleted on the way out."""
    core = client.CoreV1Api(api_client)
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    """A new namespace (with its default ServiceAccount ready); deleted after the test."""
    core = client.CoreV1Api(api_client)
    with temp_namespace(api_client) as name:
        def sa_ready() -> bool:
            try:
                core.read_namespaced_service_account("default", name)
                return True
            except ApiException:
                return False

        wait_for(sa_ready, 30, what=f"default ServiceAccount in {name}")
        yield name


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
