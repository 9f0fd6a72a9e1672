"""The operator as a host process, for the control-plane tier (tests/e2e installs it by Helm instead)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from localoperator import OperatorProcess


@pytest.fixture(scope="module")
def operator(crd: str, kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator running as a subprocess for the module's tests (resync every 3 s)."""
    with OperatorProcess(kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log").start() as op:
        yield op
