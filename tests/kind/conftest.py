"""The kind tier: a kind cluster (hack/kindcluster.py) with the images we build loaded into it.

Runs in its own pytest session (`make test` calls it after the other tiers): it starts a Docker
engine when none runs, and the real-node tier's pod bridge must not be up beside it. The session
fixture's teardown fails when the machine is not as it was found: links (bridges, veths),
iptables rules and chains in every table, nft tables, sysctls, dockerd, mounts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kindcluster import KindCluster
from localdocker import machine_state
from localnet import BRIDGE


@pytest.fixture(scope="session")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KindCluster]:
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        pytest.fail(f"the real-node tier's bridge {BRIDGE} is up: run tests/kind in its own session "
                    "(as `make test` does), with no local cluster running")
    before = machine_state()
    # Tests never try a registry: they assemble the node image (cached) unless told otherwise.
    os.environ.setdefault("MODELDEPLOY_KIND_NODE", "local")
    c = KindCluster(name="modeldeploy-test", state_dir=tmp_path_factory.mktemp("kind"))
    try:
        c.up()
        yield c
    finally:
        c.down()
    left = c.docker.leftovers(before) if c.docker.started else []
    assert not left, f"the kind tier's teardown left these on the machine: {left}"


def pytest_configure(config: pytest.Config) -> None:
    # Registered here, not in pyproject.toml: its digest is an input of every image's cache key.
    config.addinivalue_line("markers", "kind: needs a kind cluster (Docker engine, root); own session")
