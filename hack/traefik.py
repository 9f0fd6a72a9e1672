#!/usr/bin/env python3
"""A real Gateway API data plane beside the local cluster: Traefik with its Kubernetes Gateway provider.

Why: the `gatewayAPI` router writes an HTTPRoute whose weights are the canary's share. Checking
the object is not checking the traffic; Traefik (built from its Go module by
hack/build-binaries.sh; Envoy, and so Istio's data plane, cannot be built here) reads the route
like a cluster's gateway would and splits real requests by its backendRefs' weights. Flagger's
`gatewayapi:v1` provider needs the same data plane (its `kubernetes` provider cannot shift
traffic), so the peers benchmark uses it too.

Run out of cluster: the provider reads the local kubeconfig (KUBECONFIG), sees Services'
EndpointSlices and sends requests straight to the pod IPs on the pod bridge. Everything it
listens on is on 127.0.0.1 and a free port: the `web` entry point (the Gateway's one listener
has its port, which is how Traefik matches a listener to an entry point) and the `traefik` entry
point (API, ping, Prometheus metrics). The standard-channel Gateway API CRDs come from the
sigs.k8s.io/gateway-api module (hack/gomodules.py); Traefik watches all of them (GRPCRoute,
BackendTLSPolicy too), so installing only those the router tests need would stall its informers.

Use: `TraefikGateway(kubeconfig, workdir).start()` ... `.stop()`; `parent_ref()` is what an
HTTPRoute names. As a script: `hack/traefik.py up|down` beside a running `make cluster-up`.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from gomodules import module_dir, versions
from localcluster import DEFAULT_STATE, bin_dir, free_port, stop_process, wait_until

CONTROLLER_NAME = "traefik.io/gateway-controller"  # fixed in Traefik's provider


def gateway_api_crds(dest: Path) -> list[tuple[Path, str]]:
    """The standard-channel Gateway API CRDs of the pinned version, one file each: (path, CRD name)."""
    v = versions()["GATEWAY_API_VERSION"]
    src = module_dir("sigs.k8s.io/gateway-api", v) / "config" / "crd" / "standard"
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for f in sorted(src.glob("gateway.networking.k8s.io_*.yaml")):
        target = dest / f.name
        target.write_text(f.read_text())
        out.append((target, f.name.removeprefix("gateway.networking.k8s.io_").removesuffix(".yaml")
                    + ".gateway.networking.k8s.io"))
    if not out:
        raise RuntimeError(f"no Gateway API CRDs under {src}")
    return out


class TraefikGateway:
    """Traefik's process, its GatewayClass, and one Gateway (namespace `namespace`) accepting routes
    from every namespace."""

    def __init__(self, kubeconfig: str | Path, workdir: Path | None = None, binary: Path | None = None,
                 namespace: str = "gateway", gateway: str = "modeldeploy", gateway_class: str = "traefik") -> None:
        self.kubeconfig = str(kubeconfig)
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="modeldeploy-traefik-"))
        self.binary = binary
        self.namespace, self.gateway, self.gateway_class = namespace, gateway, gateway_class
        self.web_port = self.api_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = dict(os.environ, KUBECONFIG=self.kubeconfig)
        # Traefik takes the in-cluster path when these are set; out of cluster they must not be.
        self.env.pop("KUBERNETES_SERVICE_HOST", None)
        self.env.pop("KUBERNETES_SERVICE_PORT", None)

    @property
    def url(self) -> str:
        """Where clients send requests (the Gateway's listener)."""
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def api_url(self) -> str:
        """Traefik's own API, ping and /metrics."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "traefik.log"

    def parent_ref(self) -> dict[str, str]:
        return {"name": self.gateway, "namespace": self.namespace}

    # -- lifecycle -----------------------------------------------------------------------------
    def install_crds(self, install_crd) -> None:  # type: ignore[no-untyped-def]
        """Install the Gateway API CRDs with `install_crd(path, name)` (LocalCluster.install_crd)."""
        for path, name in gateway_api_crds(self.workdir / "crds"):
            install_crd(path, name)

    def start(self, timeout: float = 60.0) -> TraefikGateway:
        binary = self.binary or bin_dir() / "traefik"
        self.web_port, self.api_port = free_port(), free_port()
        argv = [
            str(binary),
            f"--entryPoints.web.address=127.0.0.1:{self.web_port}",
            f"--entryPoints.traefik.address=127.0.0.1:{self.api_port}",
            # The API without the dashboard: the module carries no built web UI.
            "--api=true", "--api.insecure=true", "--api.dashboard=false", "--ping=true",
            "--metrics.prometheus=true",
            "--providers.kubernetesgateway=true",
            "--providers.kubernetesgateway.statusAddress.ip=127.0.0.1",
            # A new weight reaches the data plane within ~0.1 s of the route's change (default 2 s).
            "--providers.providersThrottleDuration=100ms",
            # Nothing leaves the machine.
            "--global.checkNewVersion=false", "--global.sendAnonymousUsage=false",
            "--log.level=INFO",
        ]
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, start_new_session=True, cwd=self.workdir)
        try:
            wait_until(self._pinged, timeout, f"traefik /ping (log: {self.log_path})", error=RuntimeError)
            self._apply_gateway()
            wait_until(self.gateway_programmed, timeout, f"Gateway {self.namespace}/{self.gateway} Programmed "
                       f"(log: {self.log_path})", error=RuntimeError)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc.pid)
            self.proc.wait(timeout=5)
            self.proc = None
        self.kubectl("delete", "namespace", self.namespace, "--ignore-not-found", "--wait=false", check=False)
        self.kubectl("delete", "gatewayclass", self.gateway_class, "--ignore-not-found", "--wait=false", check=False)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> TraefikGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- objects -------------------------------------------------------------------------------
    def kubectl(self, *argv: str, stdin: str | None = None, check: bool = True) -> str:
        out = subprocess.run(["kubectl", *argv], input=stdin, env=self.env, capture_output=True, text=True)
        if check and out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(argv)} failed: {out.stderr.strip()}")
        return out.stdout

    def objects(self) -> list[dict]:
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
             "metadata": {"name": self.gateway_class}, "spec": {"controllerName": CONTROLLER_NAME}},
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
             "metadata": {"name": self.gateway, "namespace": self.namespace},
             "spec": {"gatewayClassName": self.gateway_class,
                      "listeners": [{"name": "web", "protocol": "HTTP", "port": self.web_port,
                                     "allowedRoutes": {"namespaces": {"from": "All"}}}]}},
        ]

    def _apply_gateway(self) -> None:
        self.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                             "items": self.objects()}))

    def _status(self, kind: str, name: str, namespace: str | None = None) -> dict:
        ns = ["-n", namespace] if namespace else []
        out = self.kubectl("get", kind, name, *ns, "-o", "json", check=False)
        return json.loads(out).get("status", {}) if out else {}

    def gateway_programmed(self) -> bool:
        conds = self._status("gateway.gateway.networking.k8s.io", self.gateway, self.namespace).get("conditions", [])
        return any(c["type"] == "Programmed" and c["status"] == "True" for c in conds)

    def route_accepted(self, namespace: str, name: str) -> bool:
        """The HTTPRoute `namespace/name` is accepted by our Gateway and its backends resolved."""
        for parent in self._status("httproute.gateway.networking.k8s.io", name, namespace).get("parents", []):
            if parent.get("controllerName") != CONTROLLER_NAME:
                continue
            conds = {c["type"]: c["status"] for c in parent.get("conditions", [])}
            return conds.get("Accepted") == "True" and conds.get("ResolvedRefs") == "True"
        return False

    def _pinged(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"traefik exited {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(self.api_url + "/ping", timeout=1) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["up", "down"])
    ap.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    args = ap.parse_args(argv)
    from localcluster import LocalCluster

    c = LocalCluster(state_dir=args.state_dir)
    if not c.load():
        raise SystemExit("no local cluster: `make cluster-up` first")
    pidfile = args.state_dir / "traefik.json"
    if args.command == "up":
        t = TraefikGateway(c.kubeconfig, workdir=args.state_dir / "traefik")
        t.install_crds(c.install_crd)
        t.start()
        assert t.proc is not None
        pidfile.write_text(json.dumps({"pid": t.proc.pid, "url": t.url, "api": t.api_url}))
        print(f"traefik pid {t.proc.pid}: Gateway {t.namespace}/{t.gateway} on {t.url}; API and /metrics on "
              f"{t.api_url}; log {t.log_path}")
    else:
        if pidfile.exists():
            stop_process(json.loads(pidfile.read_text())["pid"])
            pidfile.unlink()
        TraefikGateway(c.kubeconfig, workdir=args.state_dir / "traefik").stop()
        print("traefik: down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
