"""Files out of Go modules (CRDs, manifests), through the Go module cache.

Why: the machines reach no release download site, but they reach the Go module proxy, and the
projects we run beside the cluster ship their CRDs inside their modules (Gateway API in
`config/crd/`, Flagger in `artifacts/flagger/`, Argo Rollouts in `manifests/crds/`). `go mod
download -json` is a no-op when the module is already in the cache (hack/build-binaries.sh
fetched it to build the binary) and otherwise fetches it through the proxy, the ordinary client.
Standard library only.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def versions() -> dict[str, str]:
    """hack/versions.env as a dict (the pins hack/build-binaries.sh builds)."""
    out = {}
    for line in (REPO / "hack" / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def module_dir(path: str, version: str) -> Path:
    """The read-only directory of module `path`@`version` in the module cache (downloaded if absent)."""
    out = subprocess.run(["go", "mod", "download", "-json", f"{path}@{version}"], capture_output=True, text=True,
                         cwd="/")
    info = json.loads(out.stdout or "{}")
    if out.returncode != 0 or "Dir" not in info:
        raise RuntimeError(f"go mod download {path}@{version} failed: {info.get('Error') or out.stderr.strip()}")
    return Path(info["Dir"])
