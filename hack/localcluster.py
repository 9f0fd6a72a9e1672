#!/usr/bin/env python3
"""A real local Kubernetes cluster, started and stopped by us: control plane, a real node, kwok.

Why this exists: modeldeploy's tests and demo must run against the real thing (etcd,
kube-apiserver, kube-controller-manager, kube-scheduler built from the upstream Go modules by
hack/build-binaries.sh). Two kinds of node serve two purposes:
- a real node (hack/localnode.py: containerd, kubelet, kube-proxy on the pod bridge of
  hack/localnet.py) runs the images we build, for namespaces that ask for it;
- kwok's fake node makes every other pod Running/Ready without containers (control-plane tests,
  scale benchmarks). `node=False` (`--no-node`) starts only that, all on loopback, without root.
Listeners are on 127.0.0.1 or on the bridge address, on free ports; TLS material (hack/pki.py) is
generated at start-up, and every process we start is recorded in a state file so `down` can stop
exactly those and undo what the node changed on the machine.

Used three ways: `make cluster-up|cluster-down|cluster-status` (this file as a script), the
pytest session fixture (tests/conftest.py imports `LocalCluster`), and `make demo`.
Standard library only, so it runs before the venv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from images import pause_image
from localnet import FAKE_POD_CIDR, NODE_IP, PodNetwork
from localnode import NODE_NAME as REAL_NODE
from localnode import RealNode, leftover_cgroups, real_pods_namespace_metadata
from pki import generate_control_plane, kubeconfig_text

REPO = Path(__file__).resolve().parent.parent
DEFAULT_STATE = REPO / ".local" / "cluster"
SERVICE_CIDR = "10.96.0.0/16"
NODE_NAME = "kwok-node-0"
# Made by `make cluster-up` (not by the test fixture) so the README's walkthrough runs on the real node as written:
# the operator's namespace and one for the models.
USER_NAMESPACES = ("modeldeploy-system", "ml")

# The API server's audit log (request URI, user, verb, status; no bodies) records two things tests
# read: every request by a ServiceAccount outside kube-system (the operator in the cluster: which
# calls its RBAC must allow, tests/integration/test_rbac_audit.py), and every list/watch of the
# child kinds by anyone (the out-of-cluster operator: do its watches carry the label selector,
# tests/integration/test_watch_scope.py). So few requests match that it costs nothing measurable.
CHILD_RESOURCES = [{"group": "apps", "resources": ["deployments"]}, {"group": "", "resources": ["services"]},
                   {"group": "autoscaling", "resources": ["horizontalpodautoscalers"]},
                   {"group": "policy", "resources": ["poddisruptionbudgets"]}]
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [{"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
              {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
              {"level": "Metadata", "verbs": ["list", "watch"], "resources": CHILD_RESOURCES},
              {"level": "None"}]}


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bin_dir() -> Path:
    """Where hack/build-binaries.sh put the binaries (it prints the path; it is a no-op when built)."""
    env = os.environ.get("MODELDEPLOY_BIN")
    if env:
        return Path(env)
    out = subprocess.run(
        [str(REPO / "hack" / "build-binaries.sh")], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class LocalCluster:
    """The control plane's processes and files; `state` holds the pids so another shell can stop them."""

    state_dir: Path = DEFAULT_STATE
    bins: Path | None = None
    # A real node (containerd + kubelet + kube-proxy on the pod bridge, needs root) beside kwok's
    # fake node; False keeps the kwok-only, all-loopback cluster (scale benchmarks).
    node: bool = True
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log (JSON lines): see AUDIT_POLICY for what it records; tests read
        it to see exactly which calls the operator makes, and nothing else is logged, so it stays small."""
        return self.logs / "audit.log"

    def audit_events(self) -> list[dict[str, Any]]:
        """The API server's audit events so far (see AUDIT_POLICY for which requests are recorded)."""
        try:
            text = self.audit_log.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip().endswith("}")]

    @property
    def api_host(self) -> str:
        """Loopback, or the bridge address when pods must reach the API server too."""
        return NODE_IP if self.node else "127.0.0.1"

    @property
    def server(self) -> str:
        return f"https://{self.api_host}:{self.ports['apiserver']}"

    @property
    def network(self) -> PodNetwork:
        return PodNetwork(self.state_dir)

    def real_node(self, bins: Path | None = None) -> RealNode:
        return RealNode(self.state_dir, bins or self.bins or bin_dir(), self._start,
                        self._stop)

    # -- state -----------------------------------------------------------------------------
    def load(self) -> bool:
        if not self.state_file.exists():
            return False
        data = json.loads(self.state_file.read_text())
        self.ports, self.pids, self.node = data["ports"], data["pids"], data.get("node", False)
        return True

    def save(self) -> None:
        self.state_file.write_text(json.dumps({"ports": self.ports, "pids": self.pids, "node": self.node},
                                              indent=2))

    # -- health ----------------------------------------------------------------------------
    def _ssl(self) -> ssl.SSLContext:
        pki = self.state_dir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def api_get(self, path: str, timeout: float = 3.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.server + path, context=self._ssl(), timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")
        except (OSError, ValueError) as e:
            return 0, str(e)

    def api_send(self, method: str, path: str, body: dict,
                 content_type: str = "application/json") -> tuple[int, str]:
        req = urllib.request.Request(self.server + path, data=json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def alive(self) -> dict[str, bool]:
        return {name: _pid_alive(pid) for name, pid in self.pids.items()}

    def healthy(self) -> bool:
        return bool(self.pids) and all(self.alive().values()) and self.api_get("/readyz")[0] == 200

    def node_ready(self, name: str = NODE_NAME) -> bool:
        code, body = self.api_get(f"/api/v1/nodes/{name}")
        if code != 200:
            return False
        conds = json.loads(body).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    # -- lifecycle -------------------------------------------------------------------------
    def _start(self, name: str, argv: list[str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=self.state_dir)
        self.pids[name] = proc.pid
        self.save()

    def _stop(self, name: str) -> None:
        pid = self.pids.pop(name, None)
        if pid is not None:
            stop_process(pid)
            self.save()

    def _wait(self, what: str, check, timeout: float) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, ok in self.alive().items() if not ok]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}; "
                                   f"see {self.logs}/{dead[0]}.log:\n{self._tail(dead[0])}")
            if check():
                return
            time.sleep(0.2)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {self.logs}")

    def _tail(self, name: str, n: int = 15) -> str:
        try:
            return "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def up(self, timeout: float = 120.0) -> float:
        """Start everything (or reuse a healthy cluster); return seconds until the node was Ready."""
        t0 = time.monotonic()
        if self.load() and self.healthy():
            return 0.0
        if self.node and os.geteuid() != 0:
            raise SystemExit("the real node needs root (containerd, a pod bridge, iptables rules): run as root, "
                             "or start a kwok-only cluster with `hack/localcluster.py up --no-node`")
        self.down(quiet=True)
        bins = self.bins or bin_dir()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("pki", "etcd", "logs"):
            shutil.rmtree(self.state_dir / sub, ignore_errors=True)
        pki_dir = self.state_dir / "pki"
        generate_control_plane(pki_dir, ("127.0.0.1", "10.96.0.1", *((NODE_IP,) if self.node else ())))
        self.ports = {k: free_port() for k in
                      ("etcd", "etcd_peer", "apiserver", "kcm", "scheduler", "kwok",
                       "kubelet_healthz", "proxy_healthz", "proxy_metrics")}
        self.pids = {}
        self.save()
        try:
            if self.node:
                self.network.up()  # bridge, routes and guards before anything listens or runs
            self._start_all(bins, pki_dir, timeout)
            if self.node:
                self._start_node(bins, timeout)
        except BaseException:
            self.down(quiet=True)
            raise
        return time.monotonic() - t0

    def _audit_policy(self) -> Path:
        policy = self.state_dir / "audit-policy.json"
        policy.write_text(json.dumps(AUDIT_POLICY))
        return policy

    def _start_all(self, bins: Path, pki: Path, timeout: float) -> None:
        p = self.ports
        etcd_url = f"http://127.0.0.1:{p['etcd']}"
        self._start("etcd", [
            str(bins / "etcd"), "--name=default", f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{p['etcd_peer']}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{p['etcd_peer']}",
            f"--initial-cluster=default=http://127.0.0.1:{p['etcd_peer']}",
            "--unsafe-no-fsync=true", "--quota-backend-bytes=2147483648", "--log-level=warn",
        ])
        self._wait("etcd", lambda: _http_ok(etcd_url + "/health"), 30)

        self._start("apiserver", [
            str(bins / "kube-apiserver"), f"--etcd-servers={etcd_url}",
            f"--bind-address={self.api_host}", f"--advertise-address={self.api_host}",
            f"--secure-port={p['apiserver']}",
            # With a real node the `kubernetes` Service needs its endpoint (the bridge address).
            f"--endpoint-reconciler-type={'lease' if self.node else 'none'}",
            # Namespaces pick the real node by annotation (localnode.real_pods_namespace_metadata).
            "--enable-admission-plugins=NodeRestriction,PodNodeSelector,PodTolerationRestriction",
            f"--kubelet-client-certificate={pki / 'admin.crt'}", f"--kubelet-client-key={pki / 'admin.key'}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--allow-privileged=true", "--profiling=false", "--v=1",
            f"--audit-policy-file={self._audit_policy()}", f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json", "--audit-log-maxsize=200", "--audit-log-maxbackup=1",
        ])
        self._wait("kube-apiserver /readyz", lambda: self.api_get("/readyz")[0] == 200, timeout)
        self.kubeconfig.write_text(kubeconfig_text(self.server, pki))
        kc = str(self.kubeconfig)

        common = [f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
                  f"--authorization-kubeconfig={kc}", "--bind-address=127.0.0.1", "--leader-elect=false"]
        self._start("controller-manager", [
            str(bins / "kube-controller-manager"), *common, f"--secure-port={p['kcm']}",
            f"--root-ca-file={pki / 'ca.crt'}", f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--use-service-account-credentials=true", "--controllers=*",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--allocate-node-cidrs=false",
            # HPA reacts quickly in tests; the defaults (15 s sync) are for real clusters.
            "--horizontal-pod-autoscaler-sync-period=5s",
            # The default creates /usr/libexec/kubernetes on the host.
            f"--flex-volume-plugin-dir={self.state_dir / 'flexvolume'}",
            # The defaults (20 QPS, 5 Deployment/ReplicaSet workers) throttle bursts of hundreds
            # of Deployments for tens of seconds; raise them as busy real clusters do.
            "--kube-api-qps=300", "--kube-api-burst=600",
            "--concurrent-deployment-syncs=20", "--concurrent-replicaset-syncs=20",
            # kwok renews the node lease (below); a loaded 2-core CI machine must not flap the node.
            "--node-monitor-grace-period=120s", "--v=1",
        ])
        self._start("scheduler", [str(bins / "kube-scheduler"), *common, f"--secure-port={p['scheduler']}",
                                  "--kube-api-qps=300", "--kube-api-burst=600"])
        self._start("kwok", [
            str(bins / "kwok"), f"--kubeconfig={kc}", "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--server-address=127.0.0.1:{p['kwok']}", f"--cidr={FAKE_POD_CIDR}", "--node-ip=127.0.0.1",
            # Heartbeat through a Lease (renewed every ~10 s): without it kwok only patches node status
            # about once a minute, past the node monitor's grace period, and the node flaps NotReady.
            "--node-lease-duration-seconds=40",
        ])
        self._create_node()
        self._wait(f"node {NODE_NAME} Ready", self.node_ready, timeout)
        # The default ServiceAccount must exist before pods can be admitted in `default`.
        self._wait("default ServiceAccount",
                   lambda: self.api_get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
                   timeout)

    def _start_node(self, bins: Path, timeout: float) -> None:
        """containerd (with the pause image), kubelet and kube-proxy; wait until pods can run and reach us."""
        node = self.real_node(bins)
        node.prepare()
        node.start_containerd()
        self._wait("containerd", node.containerd_ready, 30)
        node.import_image(pause_image())
        p = self.ports
        node.start_kubelet(self.server, p["kubelet_healthz"])
        node.start_kube_proxy(self.server, p["proxy_healthz"], p["proxy_metrics"])
        self._wait(f"node {REAL_NODE} Ready", lambda: self.node_ready(REAL_NODE), timeout)
        self._wait("kube-proxy healthy", lambda: _http_ok(f"http://127.0.0.1:{p['proxy_healthz']}/healthz"), timeout)

    def _create_node(self) -> None:
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux",
                           "kubernetes.io/arch": "amd64", "type": "kwok"},
            },
            # No taint: pods land here unless their namespace sends them to the (tainted) real node.
            # Room for benchmarks of hundreds of models at their default requests (250m CPU, 512Mi).
            "status": {"allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "3000"},
                       "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "3000"}},
        }
        deadline = time.monotonic() + 30
        while True:
            code, body = self.api_send("POST", "/api/v1/nodes", node)
            if code in (201, 409):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"creating node failed: {code} {body}")
            time.sleep(0.3)

    def down(self, quiet: bool = False) -> None:
        """Stop every process `up` started (TERM, then KILL after a deadline), newest first.

        With a real node: the node first (kubelet, pods through the CRI, kube-proxy, containerd,
        mounts, cgroups), the control plane next, the network (bridge, chains, sysctls) last.
        """
        if not self.pids:
            self.load()
        if self.node or (self.state_dir / "node").exists():
            self.real_node().down(kubelet_running="kubelet" in self.pids)
        for name in reversed(list(self.pids)):
            stop_process(self.pids[name])
            if not quiet:
                print(f"stopped {name} (pid {self.pids[name]})")
        self.pids = {}
        if self.state_file.exists():
            self.state_file.unlink()
        shutil.rmtree(self.state_dir / "etcd", ignore_errors=True)
        if self.network.record.exists():
            self.network.down()
        shutil.rmtree(self.state_dir / "node", ignore_errors=True)

    def status(self) -> str:
        if not self.load():
            return "cluster: down (no state)"
        lines = [f"cluster state: {self.state_dir}"]
        for name, ok in self.alive().items():
            lines.append(f"  {name:<20} pid {self.pids[name]:<8} {'running' if ok else 'DEAD'}")
        code, _ = self.api_get("/readyz")
        lines.append(f"  apiserver {self.server} readyz={code or 'unreachable'}")
        lines.append(f"  node {NODE_NAME} (kwok): {'Ready' if self.node_ready() else 'not ready'}")
        if self.node:
            lines.append(f"  node {REAL_NODE} (kubelet+containerd on {NODE_IP}): "
                         f"{'Ready' if self.node_ready(REAL_NODE) else 'not ready'}")
        lines.append(f"export KUBECONFIG={self.kubeconfig}")
        return "\n".join(lines)

    @staticmethod
    def leftovers() -> list[str]:
        """What a real node's teardown should have removed from the machine and did not."""
        return PodNetwork.leftovers() + leftover_cgroups()

    def install_crd(self, path: Path, name: str, timeout: float = 60.0) -> None:
        """`kubectl apply --server-side` a CRD file and wait until `name` is Established.

        Polled here rather than with `kubectl wait`, which fails at once ("accessor error: <nil>")
        when it reads the CRD before the API server has written any condition.
        """
        argv = ["kubectl", "apply", "--server-side", "-f", str(path)]
        out = subprocess.run(argv, env=dict(os.environ, KUBECONFIG=str(self.kubeconfig)), capture_output=True,
                             text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {out.stderr}")

        def established() -> bool:
            code, body = self.api_get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            conds = json.loads(body).get("status", {}).get("conditions") or [] if code == 200 else []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

        wait_until(established, timeout, f"CRD {name} Established", error=RuntimeError)

    def prepare_namespaces(self, names: tuple[str, ...]) -> None:
        """Create (or update) namespaces whose pods the API server sends to the real node (hack/localnode.py's
        real_pods_namespace_metadata). Server-side apply with its own field manager, so a later client-side
        `kubectl apply` of the same Namespace (e.g. manifests/install) keeps these labels and annotations."""
        for name in names:
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
                                                                        **real_pods_namespace_metadata()}}
            code, text = self.api_send("PATCH", f"/api/v1/namespaces/{name}?fieldManager=modeldeploy-local&force=true",
                                       body, content_type="application/apply-patch+yaml")
            if code not in (200, 201):
                raise SystemExit(f"namespace {name}: HTTP {code}: {text[:300]}")

    def import_images(self) -> list[str]:
        """Build (or find cached: hack/images.py) the operator image and the test models v1..v4, and import them
        into the real node's containerd; one line per image: its names there."""
        from images import OPERATOR_TAG, TEST_MODELS, operator_image, test_model_image

        node = self.real_node()
        lines = [f"{OPERATOR_TAG}: {' '.join(node.import_image(operator_image()))}"]
        for i in TEST_MODELS:
            lines.append(f"room-price v{i}: {' '.join(node.import_image(test_model_image(i)))}")
        return lines

    def rss_mib(self) -> dict[str, float]:
        """Resident memory of each control-plane process, from /proc."""
        out = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[name] = int(line.split()[1]) / 1024
        return out


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2,
               error: type[Exception] = TimeoutError) -> Any:
    """Poll `check` until it returns something truthy; raise `error` naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise error(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def stop_process(pid: int, timeout: float = 15.0) -> None:
    """Stop a process group we started: TERM, then KILL after `timeout` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not _pid_alive(pid):
                return
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["up", "down", "status", "rss", "images"],
                    help="up: start (or reuse) the cluster; down: stop it and put the machine back; status; "
                         "rss: memory of the processes; images: build (cached) and import the operator and "
                         "room-price v1..v4 images into the real node")
    ap.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    ap.add_argument("--no-node", action="store_true", help="kwok only: no kubelet, containerd or pod bridge")
    args = ap.parse_args(argv)
    c = LocalCluster(state_dir=args.state_dir, node=not args.no_node)
    if args.command == "up":
        secs = c.up()
        print(c.status())
        print(f"# node Ready after {secs:.1f}s" if secs else "# already running")
        if c.node:
            c.prepare_namespaces(USER_NAMESPACES)
            print(f"# namespaces {', '.join(USER_NAMESPACES)}: their pods run on the real node, under Pod Security "
                  "\"restricted\"")
        print(f"export KUBECONFIG={c.kubeconfig}")
    elif args.command == "down":
        c.down()
        left = c.leftovers()
        print("cluster: down" + (f"; LEFT ON THE MACHINE: {left}" if left else ""))
        return 1 if left else 0
    elif args.command == "status":
        print(c.status())
        return 0 if c.healthy() else 1
    elif args.command == "images":
        if not (c.load() and c.healthy() and c.node):
            print("no local cluster with a real node is running: start it with `make cluster-up`", file=sys.stderr)
            return 1
        for line in c.import_images():
            print(line)
    elif args.command == "rss":
        c.load()
        rss = c.rss_mib()
        print(json.dumps({k: round(v, 1) for k, v in rss.items()} | {"total": round(sum(rss.values()), 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
