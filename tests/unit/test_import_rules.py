"""House rule: pure layers never import an API client, so they stay unit-testable without servers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "operator" / "modeldeploy"
PURE = [*sorted((PKG / "resources").glob("*.py")), *sorted((PKG / "rollout").glob("*.py")),
        *sorted((PKG / "routers").glob("*.py")), PKG / "reconcile.py", PKG / "diff.py", PKG / "api.py",
        PKG / "crd.py", PKG / "metrics" / "queries.py"]
FORBIDDEN = ("kubernetes", "kopf", "urllib", "aiohttp", "httpx", "requests", "modeldeploy.k8s",
             "modeldeploy.controller", "modeldeploy.metrics.prometheus")


@pytest.mark.parametrize("path", PURE, ids=[str(p.relative_to(PKG)) for p in PURE])
def test_pure_module_imports_no_client(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for name in names:
            assert not name.startswith(FORBIDDEN), f"{path.name} imports {name}"
