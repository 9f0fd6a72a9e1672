#!/usr/bin/env python3
"""A kind cluster for the demo and the kind tests: the local cluster users already have.

Why: ML platform engineers try an operator on kind first (``kind create cluster``, ``kind load``,
``helm install``). This module drives the real kind CLI (built by hack/build-binaries.sh) against
the Docker engine of hack/localdocker.py, with one node, the API server on 127.0.0.1, and:

- the node image: kind's own (``kindest/node``) where it is present or can be pulled, and
  otherwise the one hack/kindnode.py assembles (``MODELDEPLOY_KIND_NODE=kind|local|auto``);
- CoreDNS told not to forward outside the cluster (the guards drop it anyway);
- a host route to the Service range via the node (root only), so load from this machine goes
  through a model's Service VIP and kube-proxy picks the pod, as on the real node;
- ``load(archive)``: ``kind load image-archive`` of the docker-save archives hack/images.py builds.

``down()`` deletes the cluster, its network and the route, then stops the engine if we started
it (putting iptables and sysctls back). A record in <state>/kind.json lets another process
(``make kind-down``) do it after ``KEEP=1``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
sys.path.insert(0, str(HACK))

from localcluster import bin_dir, wait_until  # noqa: E402
from localdocker import DockerEngine  # noqa: E402

DEFAULT_STATE = REPO / ".local" / "kind"
SERVICE_CIDR = "10.96.0.0/16"  # kind's default serviceSubnet
KIND_CONFIG = f"""kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  apiServerAddress: "127.0.0.1"
  serviceSubnet: "{SERVICE_CIDR}"
nodes:
  - role: control-plane
"""


@dataclass
class KindCluster:
    name: str = "modeldeploy"
    state_dir: Path = DEFAULT_STATE
    node_mode: str = field(default_factory=lambda: os.environ.get("MODELDEPLOY_KIND_NODE", "auto"))
    docker: DockerEngine = field(default_factory=DockerEngine)
    bins: Path | None = None
    route: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def record(self) -> Path:
        return self.state_dir / "kind.json"

    @property
    def kind(self) -> str:
        return str((self.bins or bin_dir()) / "kind")

    @property
    def env(self) -> dict[str, str]:
        env = self.docker.env
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bins or bin_dir()}{os.pathsep}{REPO / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
        return env

    def run(self, *argv: str, check: bool = True, stdin: str | None = None) -> str:
        out = subprocess.run(list(argv), capture_output=True, text=True, env=self.env, input=stdin)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {(out.stderr or out.stdout).strip()[-3000:]}")
        return out.stdout

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        return self.run("kubectl", *args, check=check, stdin=stdin)

    def _node_image(self) -> str:
        from kindnode import node_image

        if self.node_mode in ("kind", "auto"):
            default = self._kind_default_image()
            if self.docker.docker("image", "inspect", default, check=False).returncode == 0:
                return default
            if self.node_mode == "kind" or self._pull(default):
                return default
        t0 = time.monotonic()
        name, cached = node_image(self.docker, self.bins)
        self.timings["node image (cached)" if cached else "node image (built)"] = time.monotonic() - t0
        return name

    def _kind_default_image(self) -> str:
        """The node image this kind release defaults to (a constant in its Go module)."""
        from kindnode import versions

        mod = subprocess.run(["go", "mod", "download", "-json", f"sigs.k8s.io/kind@{versions()['KIND_VERSION']}"],
                             capture_output=True, text=True)
        src = Path(json.loads(mod.stdout)["Dir"]) / "pkg/apis/config/defaults/image.go"
        for line in src.read_text().splitlines():
            if line.startswith("const Image"):
                return line.split('"')[1]
        raise RuntimeError(f"no default image in {src}")

    def _pull(self, image: str) -> bool:
        """Try kind's node image from its registry, bounded (fails fast where no registry is reachable)."""
        try:
            return subprocess.run(["docker", "pull", "-q", image], capture_output=True, env=self.docker.env,
                                  timeout=120).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def up(self) -> KindCluster:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.docker.up()
        self.record.write_text(json.dumps({"name": self.name, "route": ""}))
        image = self._node_image()
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="kind-config-") as cfg:
            cfg.write(KIND_CONFIG)
            cfg.flush()
            t0 = time.monotonic()
            self.run(self.kind, "create", "cluster", "--name", self.name, "--image", image, "--config", cfg.name,
                     "--kubeconfig", str(self.kubeconfig), "--wait", "180s")
            self.timings["kind create cluster"] = time.monotonic() - t0
        self._coredns_local_only()
        if os.geteuid() == 0:
            self._route()
        t0 = time.monotonic()
        wait_until(self._system_pods_ready, 240, "kube-system pods Running and Ready", interval=1.0)
        self.timings["system pods Ready"] = time.monotonic() - t0
        return self

    def _coredns_local_only(self) -> None:
        cm = json.loads(self.kubectl("get", "configmap", "coredns", "-n", "kube-system", "-o", "json"))
        corefile = cm["data"]["Corefile"]
        kept: list[str] = []
        skipping = False
        for ln in corefile.splitlines():  # drop the `forward . /etc/resolv.conf { ... }` block
            if skipping:
                skipping = ln.strip() != "}"
            elif ln.strip().startswith("forward "):
                skipping = ln.rstrip().endswith("{")
            else:
                kept.append(ln)
        if len(kept) != len(corefile.splitlines()):
            cm["data"]["Corefile"] = "\n".join(kept) + "\n"
            self.kubectl("replace", "-f", "-", stdin=json.dumps(cm))
            self.kubectl("rollout", "restart", "deployment/coredns", "-n", "kube-system")

    def node_ip(self) -> str:
        return self.docker.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                                  f"{self.name}-control-plane").stdout.strip()

    def _route(self) -> None:
        existing = subprocess.run(["ip", "route", "show", SERVICE_CIDR], capture_output=True, text=True).stdout
        if existing.strip():
            raise RuntimeError(f"this machine already routes {SERVICE_CIDR} ({existing.strip()}): another local "
                               "cluster is up; stop it first")
        subprocess.run(["ip", "route", "add", SERVICE_CIDR, "via", self.node_ip()], check=True)
        self.route = SERVICE_CIDR
        self.record.write_text(json.dumps({"name": self.name, "route": self.route}))

    def _system_pods_ready(self) -> bool:
        pods = json.loads(self.kubectl("get", "pods", "-n", "kube-system", "-o", "json"))["items"]
        return bool(pods) and all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            for p in pods if not p["metadata"].get("deletionTimestamp"))

    def load(self, archive: Path) -> float:
        t0 = time.monotonic()
        self.run(self.kind, "load", "image-archive", str(archive), "--name", self.name)
        return time.monotonic() - t0

    def apply(self, objects: list[dict[str, Any]]) -> None:
        self.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))

    def down(self) -> None:
        rec = json.loads(self.record.read_text()) if self.record.exists() else {}
        self.docker.attach()
        if rec:
            t0 = time.monotonic()
            self.run(self.kind, "delete", "cluster", "--name", rec.get("name", self.name), check=False)
            self.timings["kind delete cluster"] = time.monotonic() - t0
            if rec.get("route"):
                subprocess.run(["ip", "route", "del", rec["route"]], capture_output=True)
            others = self.run(self.kind, "get", "clusters", check=False).split()
            if not others:
                self.docker.docker("network", "rm", "kind", check=False)
            self.record.unlink()
        self.docker.down()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("cmd", choices=["up", "down"])
    args = ap.parse_args(argv)
    c = KindCluster()
    if args.cmd == "up":
        c.up()
        print(f"export KUBECONFIG={c.kubeconfig}" + (f" DOCKER_HOST={c.docker.host}" if c.docker.started else ""))
        print(json.dumps({k: round(v, 1) for k, v in c.timings.items()}))
    else:
        c.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
