"""`modeldeploy operator --context`: both of the operator's clients (kopf's watches and its own
writes) use the named context of the kubeconfig, not its current-context; a context that is not
in the file fails at start in one line.

The kubeconfig's current-context points at a loopback port where nothing listens, so an operator
that used it for either client would never reconcile anything.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from localcluster import free_port
from localoperator import OperatorProcess
from tests.conftest import wait_for
from tests.integration.test_operator import Cluster, mdep

pytestmark = pytest.mark.cluster


@pytest.fixture
def two_contexts(kubeconfig: str, tmp_path: Path) -> str:
    """The test cluster's kubeconfig with a dead current-context and the real cluster as good-context."""
    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    ctx = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])
    real = next(c for c in cfg["clusters"] if c["name"] == ctx["context"]["cluster"])
    dead = {"name": "dead", "cluster": {**real["cluster"], "server": f"https://127.0.0.1:{free_port()}"}}
    cfg["clusters"] = [real, dead]
    cfg["contexts"] = [{"name": "dead-context", "context": {**ctx["context"], "cluster": "dead"}},
                       {"name": "good-context", "context": ctx["context"]}]
    cfg["current-context"] = "dead-context"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture
def operator_in_context(crd: str, two_contexts: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(two_contexts, tmp_path / "operator.log",
                         args=("--kubeconfig", two_contexts, "--context", "good-context"))
    try:
        yield op.start()
    finally:
        op.stop()


def test_operator_reconciles_through_the_named_context(api_client: client.ApiClient, namespace: str,
                                                       operator_in_context: OperatorProcess) -> None:
    k = Cluster(api_client, namespace)
    k.create(mdep("ctx-price"))
    wait_for(lambda: k.deployment("ctx-price"), 60,
             what=f"the operator creates the Deployment (log: {operator_in_context.log_path})")
    wait_for(lambda: k.get("ctx-price").get("status", {}).get("phase"), 60, what="status.phase written")


def test_operator_with_a_missing_context_fails_at_start(crd: str, two_contexts: str) -> None:
    out = subprocess.run([sys.executable, "-m", "modeldeploy.cli", "operator", "--kubeconfig", two_contexts,
                          "--context", "missing"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert out.stderr == ('error: context "missing" not found in the kubeconfig (list them with: kubectl config '
                          "get-contexts)\n")
