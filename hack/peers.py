#!/usr/bin/env python3
"""The tools users would pick instead of modeldeploy, run beside the local cluster: Flagger and Argo Rollouts.

Why: our rollback times and damage figures mean something only next to the peers' on the same
cluster, the same pods, the same Prometheus and the same fault (tests/benchmarks/bench_peers.py).
Both are built from their Go modules by hack/build-binaries.sh and run here as processes out of
cluster against the local kubeconfig, each watching one namespace; their CRDs come from the same
modules, through the Go module cache (hack/gomodules.py):

- Flagger (`artifacts/flagger/crd.yaml`): `-mesh-provider=gatewayapi:v1`, since its `kubernetes`
  provider is blue/green only and cannot shift a share of traffic; the weights are carried out
  by Traefik (hack/traefik.py). Leader election is off by default.
- Argo Rollouts (`manifests/crds/`): `--leader-elect=false --namespaced --namespace NS`; a basic
  canary without trafficRouting is a replica ratio behind one Service, like our `replicas` router.

Both bind their HTTP servers (Flagger's metrics, Argo's healthz and metrics) to every address,
with no flag to say otherwise (Flagger `":" + port`, Argo `"0.0.0.0:%d"`). So each one starts
behind a guard: an iptables chain of its own (MODELDEPLOY-P<port>, in mangle INPUT, IPv4 and
IPv6) that drops those ports on every interface but loopback, inserted before the process starts
and removed after it has exited.
Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from gomodules import module_dir, versions
from localcluster import bin_dir, free_port, stop_process, wait_until


class LoopbackGuard:
    """Drop TCP to `ports` unless it arrives on loopback, for a process that listens on 0.0.0.0."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.chain = f"MODELDEPLOY-P{ports[0]}"

    def _run(self, *argv: str, check: bool = True) -> int:
        out = subprocess.run(list(argv), capture_output=True, text=True)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {out.stderr.strip()}")
        return out.returncode

    def up(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("the peers listen on every address; guarding their ports needs root (iptables)")
        try:
            for cmd in ("iptables", "ip6tables"):
                ipt = (cmd, "-t", "mangle")
                self._run(*ipt, "-N", self.chain)
                self._run(*ipt, "-A", self.chain, "-i", "lo", "-j", "RETURN")
                self._run(*ipt, "-A", self.chain, "-p", "tcp", "-m", "multiport", "--dports",
                          ",".join(map(str, self.ports)), "-j", "DROP")
                self._run(*ipt, "-I", "INPUT", "1", "-j", self.chain)
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        for cmd in ("iptables", "ip6tables"):
            ipt = (cmd, "-t", "mangle")
            while self._run(*ipt, "-D", "INPUT", "-j", self.chain, check=False) == 0:
                pass
            self._run(*ipt, "-F", self.chain, check=False)
            self._run(*ipt, "-X", self.chain, check=False)


class PeerController:
    """One peer's process: guarded ports, a log file, a health URL; `start()` ... `stop()`."""

    name = ""
    crd_names: tuple[str, ...] = ()

    def __init__(self, kubeconfig: str | Path, namespace: str, workdir: Path, binary: Path | None = None) -> None:
        self.kubeconfig = str(kubeconfig)
        self.namespace = namespace
        self.workdir = workdir
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None
        self.guard: LoopbackGuard | None = None
        self.ports: dict[str, int] = {}

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def crd_files(self) -> list[Path]:
        raise NotImplementedError

    def argv(self, binary: Path) -> list[str]:
        raise NotImplementedError

    def health_url(self) -> str:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        env = dict(os.environ, KUBECONFIG=self.kubeconfig)
        env.pop("KUBERNETES_SERVICE_HOST", None)  # out of cluster: never the in-cluster config
        env.pop("KUBERNETES_SERVICE_PORT", None)
        return env

    def install_crds(self, install_crd) -> None:  # type: ignore[no-untyped-def]
        """`install_crd(path, name)` (LocalCluster.install_crd) for each CRD of this peer."""
        files = self.crd_files()
        for name in self.crd_names:
            path = next(f for f in files if f"name: {name}\n" in f.read_text())
            install_crd(path, name)

    def start(self, timeout: float = 60.0) -> PeerController:
        binary = self.binary or bin_dir() / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.guard = LoopbackGuard(list(self.ports.values()))
        self.guard.up()
        try:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self.argv(binary), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=self.env(), start_new_session=True,
                                             cwd=self.workdir)
            wait_until(self._healthy, timeout, f"{self.name} {self.health_url()} (log: {self.log_path})",
                       error=RuntimeError)
        except BaseException:
            self.stop()
            raise
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(self.health_url(), timeout=1) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc.pid)
            self.proc.wait(timeout=5)
            self.proc = None
        if self.guard is not None:
            self.guard.down()
            self.guard = None

    def __enter__(self) -> PeerController:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Flagger(PeerController):
    """Flagger with the Gateway API provider, watching `namespace`, querying `prometheus`."""

    name = "flagger"
    crd_names = ("canaries.flagger.app", "metrictemplates.flagger.app", "alertproviders.flagger.app")

    def __init__(self, kubeconfig: str | Path, namespace: str, workdir: Path, prometheus: str,
                 binary: Path | None = None, mesh_provider: str = "gatewayapi:v1") -> None:
        super().__init__(kubeconfig, namespace, workdir, binary)
        self.prometheus = prometheus
        self.mesh_provider = mesh_provider
        self.ports = {"http": free_port()}

    def crd_files(self) -> list[Path]:
        return [module_dir("github.com/fluxcd/flagger", versions()["FLAGGER_VERSION"])
                / "artifacts" / "flagger" / "crd.yaml"]

    def argv(self, binary: Path) -> list[str]:
        return [str(binary), f"-kubeconfig={self.kubeconfig}", f"-namespace={self.namespace}",
                f"-mesh-provider={self.mesh_provider}", f"-metrics-server={self.prometheus}",
                f"-port={self.ports['http']}", "-log-level=info", "-zap-encoding=console",
                "-enable-leader-election=false"]

    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}/healthz"


class ArgoRollouts(PeerController):
    """The Argo Rollouts controller in namespaced mode, watching `namespace`."""

    name = "rollouts-controller"
    crd_names = ("rollouts.argoproj.io", "analysistemplates.argoproj.io", "clusteranalysistemplates.argoproj.io",
                 "analysisruns.argoproj.io", "experiments.argoproj.io")

    def __init__(self, kubeconfig: str | Path, namespace: str, workdir: Path, binary: Path | None = None) -> None:
        super().__init__(kubeconfig, namespace, workdir, binary)
        self.ports = {"healthz": free_port(), "metrics": free_port()}

    def crd_files(self) -> list[Path]:
        d = module_dir("github.com/argoproj/argo-rollouts", versions()["ARGO_ROLLOUTS_VERSION"])
        return sorted((d / "manifests" / "crds").glob("*-crd.yaml"))

    def argv(self, binary: Path) -> list[str]:
        return [str(binary), f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--namespaced",
                f"--namespace={self.namespace}", f"--healthzPort={self.ports['healthz']}",
                f"--metricsPort={self.ports['metrics']}", "--loglevel=info"]

    def env(self) -> dict[str, str]:
        # Where it looks for its notification ConfigMap/Secret (out of cluster: no service account file).
        return super().env() | {"POD_NAMESPACE": self.namespace}

    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['healthz']}/healthz"
