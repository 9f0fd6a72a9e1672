"""A real node beside the local control plane: containerd, a kubelet and kube-proxy on the pod bridge.

Why: kwok pods run no containers, so only a real kubelet shows that the images we build start
under Pod Security "restricted", that probes, volumes and graceful shutdown work, and that a
Service's traffic really splits over the endpoints kube-proxy programs. Versions: kubelet and
kube-proxy built like the control plane (hack/build-binaries.sh); Debian's containerd 1.6, runc
and CNI plugins. Facts behind each setting: ../shared/notes/real-node.md.

Everything lives under `<state>/node` (containerd's state and socket, the kubelet's root dir,
CNI config and IPAM data), except containerd's image store (kept in ~/.cache/modeldeploy/containerd
so imported images survive a cluster, like any node's) and two paths the components insist on:
libcni's result cache in /var/lib/cni and containerd's shim sockets in /run/containerd/s, both
removed at teardown when we created them. The node is tainted, so only pods that tolerate it (namespaces
made by `real_pods_namespace`) run here, and everything else keeps landing on kwok's fake node.

Teardown order matters: stop the kubelet (it would restart what we remove), remove every pod
through the CRI (so CNI DEL deletes veths, IPs and rules), stop containerd and any shim left,
unmount what is mounted under the state dir, remove the kubepods cgroups. The network itself
(bridge, chains, sysctls) is hack/localnet.py's. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pki
from images import CACHE, import_image
from localnet import BRIDGE, CLUSTER_CIDR, NODE_IP, POD_SUBNET, SERVICE_CIDR

NODE_NAME = "modeldeploy-node"
# The taint and label that keep real pods and kwok pods apart (see real_pods_namespace).
TAINT_KEY = "modeldeploy.io/real-node"
NODE_LABEL = "modeldeploy.io/node"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
CNI_BIN = "/usr/lib/cni"
RUNC = "/usr/sbin/runc"
# containerd's content store and snapshots outlive a cluster (like the image archives they are
# imported from): a warm start imports nothing (an image already there with the same id is
# skipped), instead of re-reading about 3 GB. Only one node runs at a time (one bridge).
CONTAINERD_ROOT = CACHE / "containerd"
# Outside <state> because the components hard-code them; removed at teardown if we created them.
SHARED_DIRS = (Path("/var/lib/cni"), Path("/run/containerd"))


def real_pods_namespace_metadata() -> dict[str, dict[str, str]]:
    """Labels/annotations of a namespace whose pods run on the real node, under "restricted".

    PodNodeSelector and PodTolerationRestriction (enabled on the API server) give every pod in
    such a namespace the node selector and the toleration, so manifests need no changes.
    """
    return {
        "labels": {"pod-security.kubernetes.io/enforce": "restricted",
                   "pod-security.kubernetes.io/enforce-version": "latest"},
        "annotations": {
            "scheduler.alpha.kubernetes.io/node-selector": f"{NODE_LABEL}=real",
            "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps(
                [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]),
        },
    }


def containerd_config(d: Path) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{CONTAINERD_ROOT}"
state = "{d / 'containerd' / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{d / 'containerd.sock'}"
[ttrpc]
  address = "{d / 'containerd.sock.ttrpc'}"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'containerd' / 'opt'}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  # These machines remove CAP_SYS_RESOURCE from every process: runc cannot lower a sandbox's
  # oom_score_adj to the kubelet's -998 and every sandbox fails without this.
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{RUNC}"
        Root = "{d / 'runc'}"
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{d / 'cni' / 'net.d'}"
    max_conf_num = 1
"""


def cni_conflist(d: Path) -> dict[str, object]:
    """bridge + host-local (Service routes only: pods have no default route) -> portmap -> firewall."""
    return {
        "cniVersion": "1.0.0", "name": "modeldeploy",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(d / "cni" / "ipam"),
                      "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                      "routes": [{"dst": SERVICE_CIDR}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall", "backend": "iptables"},
        ],
    }


def kubelet_config(d: Path, pki_dir: Path, healthz_port: int) -> dict[str, object]:
    sock = f"unix://{d / 'containerd.sock'}"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": NODE_IP, "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": healthz_port,
        "tlsCertFile": str(pki_dir / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki_dir / "kubelet-serving.key"),
        "authentication": {"x509": {"clientCAFile": str(pki_dir / "ca.crt")},
                           "webhook": {"enabled": True}, "anonymous": {"enabled": False}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": sock, "imageServiceEndpoint": sock,
        # cgroup v1 here, no systemd: cgroupfs (matches SystemdCgroup=false), v1 explicitly allowed.
        "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
        # Imported images can never be pulled again: never garbage-collect them.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "resolvConf": "", "clusterDomain": "cluster.local",
        "volumePluginDir": str(d / "volume-plugins"),
        "rotateCertificates": False, "serverTLSBootstrap": False,
        "maxPods": 50, "serializeImagePulls": False,
        # Fast feedback in tests; the defaults are for large clusters.
        "nodeStatusUpdateFrequency": "4s", "syncFrequency": "10s",
    }


@dataclass
class RealNode:
    """containerd + kubelet + kube-proxy. `start` needs the bridge (localnet) and a running API server."""

    state_dir: Path          # the cluster's state dir; the node uses <state>/node
    bins: Path
    start_process: Callable[[str, list[str]], None]
    stop_process: Callable[[str], None]

    @property
    def dir(self) -> Path:
        return self.state_dir / "node"

    @property
    def socket(self) -> Path:
        return self.dir / "containerd.sock"

    def _created_shared(self) -> list[str]:
        f = self.dir / "created.json"
        return json.loads(f.read_text()) if f.exists() else []

    def prepare(self) -> None:
        """Directories, configs and the node's certificates (the CA already exists)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        for sub in ("containerd", "cni/net.d", "cni/ipam", "kubelet", "volume-plugins", "runc"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "created.json").write_text(json.dumps([str(p) for p in SHARED_DIRS if not p.exists()]))
        (self.dir / "containerd.toml").write_text(containerd_config(self.dir))
        (self.dir / "cni" / "net.d" / "10-modeldeploy.conflist").write_text(
            json.dumps(cni_conflist(self.dir), indent=2))
        pki.generate_node(self.state_dir / "pki", NODE_NAME, NODE_IP)

    def start_containerd(self) -> None:
        self.start_process("containerd", ["containerd", "--config", str(self.dir / "containerd.toml")])

    def containerd_ready(self) -> bool:
        return self.ctr("version", check=False).returncode == 0

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(["ctr", "--address", str(self.socket), "-n", "k8s.io", *args],
                             capture_output=True, text=True)
        if check and out.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed: {out.stderr.strip()}")
        return out

    def import_image(self, archive: Path) -> list[str]:
        """Make an image archive (hack/images.py) available to the kubelet; return its names."""
        return import_image(archive, str(self.socket))

    def start_kubelet(self, server: str, healthz_port: int) -> None:
        pki_dir = self.state_dir / "pki"
        (self.dir / "kubelet.kubeconfig").write_text(pki.kubeconfig_text(server, pki_dir, user="kubelet"))
        (self.dir / "kubelet.yaml").write_text(json.dumps(kubelet_config(self.dir, pki_dir, healthz_port), indent=2))
        self.start_process("kubelet", [
            str(self.bins / "kubelet"), f"--config={self.dir / 'kubelet.yaml'}",
            f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}", f"--root-dir={self.dir / 'kubelet'}",
            f"--cert-dir={self.dir / 'kubelet' / 'pki'}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}", f"--node-labels={NODE_LABEL}=real",
            f"--register-with-taints={TAINT_KEY}=true:NoSchedule", "--v=1",
        ])

    def start_kube_proxy(self, server: str, healthz_port: int, metrics_port: int) -> None:
        pki_dir = self.state_dir / "pki"
        (self.dir / "kube-proxy.kubeconfig").write_text(
            pki.kubeconfig_text(server, pki_dir, user="kube-proxy"))
        self.start_process("kube-proxy", [
            str(self.bins / "kube-proxy"), f"--kubeconfig={self.dir / 'kube-proxy.kubeconfig'}",
            "--proxy-mode=iptables", f"--cluster-cidr={CLUSTER_CIDR}", f"--hostname-override={NODE_NAME}",
            "--nodeport-addresses=127.0.0.0/8",
            f"--healthz-bind-address=127.0.0.1:{healthz_port}",
            f"--metrics-bind-address=127.0.0.1:{metrics_port}",
            # Keep it off the machine-wide conntrack sysctls.
            "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0", "--v=1",
        ])

    # -- teardown ---------------------------------------------------------------------------------
    def remove_pods(self) -> None:
        """Stop and remove every pod sandbox through the CRI, so CNI DEL cleans each pod's network."""
        if not self.socket.exists():
            return
        crictl = [str(self.bins / "crictl"), f"--runtime-endpoint=unix://{self.socket}", "--timeout=20s"]
        subprocess.run([*crictl, "rmp", "--all", "--force"], capture_output=True, text=True, timeout=120)

    def down(self, kubelet_running: bool) -> None:
        if kubelet_running:
            self.stop_process("kubelet")
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self.remove_pods()
        self.stop_process("kube-proxy")
        self.stop_process("containerd")
        self.kill_shims()
        kill_pod_processes()
        self.unmount()
        remove_kubepods_cgroups()
        for p in self._created_shared():
            shutil.rmtree(p, ignore_errors=True)

    def kill_shims(self) -> None:
        """containerd leaves its shims running by design; ours name our socket on their command line."""
        needle = str(self.socket).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmd = (proc / "cmdline").read_bytes()
                if b"containerd-shim" in cmd and needle in cmd:
                    os.kill(int(proc.name), 9)

    def unmount(self) -> None:
        """Everything mounted under the node's dirs (overlay rootfs, shm, netns, kubelet volumes), deepest first."""
        prefixes = (str(self.dir.resolve()), str(CONTAINERD_ROOT))
        for _ in range(3):
            points = [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
                      if ln.split()[4].startswith(prefixes)]
            if not points:
                return
            for mp in sorted(set(points), key=len, reverse=True):
                subprocess.run(["umount", "-l", mp], capture_output=True)


def kill_pod_processes(timeout: float = 10.0) -> list[int]:
    """SIGKILL whatever still runs in the kubepods cgroups, and wait until it is gone; return the pids.

    Normally nothing: `crictl rmp` stopped every sandbox. But a sandbox whose creation was in flight when the
    kubelet stopped is not listed yet, and once its shim is killed its pause (and containers) live on as orphans,
    holding the cgroups (seen in `make demo`: a /pause left behind)."""
    def pids() -> set[int]:
        found: set[int] = set()
        for procs in Path("/sys/fs/cgroup").glob("*/kubepods*/**/cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                found.update(int(x) for x in procs.read_text().split())
        return found

    killed = pids()
    deadline = time.monotonic() + timeout
    while (left := pids()) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    return sorted(killed)


def remove_kubepods_cgroups() -> None:
    """The kubelet creates /kubepods in every cgroup v1 hierarchy; remove the (empty) trees, leaves first."""
    root = Path("/sys/fs/cgroup")
    for top in root.glob("*/kubepods*"):
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def leftover_cgroups() -> list[str]:
    return [str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods*")]
