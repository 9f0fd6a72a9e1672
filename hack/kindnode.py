#!/usr/bin/env python3
"""A kind node image assembled from the binaries this project builds: for machines without a registry.

Why: kind's own node image (``kindest/node``) comes from a registry, and ``kind build node-image``
pulls a base image and runs ``ctr content fetch`` for every image that is not in the Kubernetes
server tarball (etcd, CoreDNS, pause). Where no registry can be reached (this kind of machine)
neither works, so the node image is put together here from what we already have:

- a root filesystem from ``debootstrap --variant=minbase bookworm`` with systemd, Debian's
  containerd, runc and CNI plugins and the tools kind's base image carries;
- kind's own files (entrypoint, systemd units, kubelet drop-ins, sysctls) from its Go module
  (``images/base/files`` of sigs.k8s.io/kind), with the same systemd trimming as its Dockerfile;
- kubeadm, kubelet, kubectl and crictl from hack/build-binaries.sh; a static CNI conflist (ptp +
  host-local + portmap: kindnetd is not served by the Go module proxy; one node needs no more);
- containerd's store preloaded (``ctr images import --no-unpack`` by a throwaway containerd) with
  the images kubeadm asks for, built ``FROM scratch`` here under exactly the names it expects:
  kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy (with iptables, nft,
  conntrack and their libraries), etcd, CoreDNS and pause.

Cached by its inputs (binaries, kind's files, the recipe below): the root filesystem as a tar
under ~/.cache/modeldeploy/kind, the image in the engine as ``modeldeploy/kind-node:<k8s>-<key>``.
A warm call only hashes files. Needs root (debootstrap, chroot) and a Docker engine
(hack/localdocker.py). Used by hack/kindcluster.py; ``python hack/kindnode.py build`` as a script.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HACK = Path(__file__).resolve().parent
sys.path.insert(0, str(HACK))

from images import IMAGES, ImageError, _digest, _run, debian_mirror, log, pause_image  # noqa: E402
from localcluster import bin_dir, stop_process, wait_until  # noqa: E402
from localdocker import DockerEngine  # noqa: E402

CACHE = IMAGES.parent / "kind"
LOGS = CACHE / "logs"
SUITE = "bookworm"
NODE_REPO = "modeldeploy/kind-node"
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "conntrack", "iptables", "nftables", "iproute2", "ethtool",
    "util-linux", "mount", "kmod", "libseccomp2", "pigz", "e2fsprogs", "bash", "ca-certificates", "curl",
    "jq", "procps", "containerd", "runc", "containernetworking-plugins",
)
POD_SUBNET = "10.244.0.0/24"   # the one node's pods (kind's default podSubnet is 10.244.0.0/16)
PAUSE = "registry.k8s.io/pause:3.10.1"
# kubeadm v1.34's image list (`kubeadm config images list`) and kind's.
ETCD_TAG = "registry.k8s.io/etcd:3.6.5-0"
COREDNS_TAG = "registry.k8s.io/coredns/coredns:v1.12.1"
CONTAINERD_CONFIG = f"""# Written by hack/kindnode.py: kind's config (images/base/files/etc/containerd/config.toml)
# without the fuse-overlayfs proxy plugin (rootless only), with the sandbox image preloaded here,
# and restrict_oom_score_adj (the kubelet asks -998 for sandboxes; without CAP_SYS_RESOURCE runc
# cannot write it, and every sandbox fails).
version = 2

[plugins."io.containerd.grpc.v1.cri".containerd]
  discard_unpacked_layers = true
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  base_runtime_spec = "/etc/containerd/cri-base.json"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = true
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.test-handler]
  runtime_type = "io.containerd.runc.v2"
  base_runtime_spec = "/etc/containerd/cri-base.json"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.test-handler.options]
    SystemdCgroup = true

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  tolerate_missing_hugepages_controller = true
  restrict_oom_score_adj = true
"""
CNI_CONFLIST = {
    "cniVersion": "0.4.0", "name": "kind-static",
    "plugins": [
        {"type": "ptp", "ipMasq": False, "mtu": 1500,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}
# kind applies /kind/manifests/default-cni.yaml after kubeadm init; the static conflist needs no pods.
CNI_PLACEHOLDER = """# hack/kindnode.py: pod networking is a static CNI conflist in /etc/cni/net.d (ptp + host-local);
# kindnetd is not available here. This ConfigMap only records that.
apiVersion: v1
kind: ConfigMap
metadata:
  name: modeldeploy-static-cni
  namespace: kube-system
data:
  conflist: /etc/cni/net.d/10-kind-static.conflist
"""
RECIPE_REV = 1  # bump when the assembly below changes in a way the constants above do not show


def kind_files(version: str) -> Path:
    """kind's images/base/files from its Go module (downloaded through the Go module proxy)."""
    out = _run(["go", "mod", "download", "-json", f"sigs.k8s.io/kind@{version}"], quiet=True)
    files = Path(json.loads(out)["Dir"]) / "images" / "base" / "files"
    if not files.is_dir():
        raise ImageError(f"no {files} in the kind module")
    return files


def versions() -> dict[str, str]:
    out = {}
    for line in (HACK / "versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def inputs(bins: Path, files: Path) -> tuple[str, dict[str, Path]]:
    """(cache key, the binaries that go in) for the node image."""
    v = versions()
    binaries = {name: bins / name for name in ("kubeadm", "kubelet", "kubectl", "crictl", "kube-apiserver",
                                               "kube-controller-manager", "kube-scheduler", "kube-proxy", "etcd")}
    binaries["coredns"] = bins / f"coredns-{v['COREDNS_VERSION']}"
    missing = [str(p) for p in binaries.values() if not p.exists()]
    if missing:
        raise ImageError(f"missing binaries (run `make setup`): {missing}")
    parts: list[bytes | str] = [json.dumps([PACKAGES, CONTAINERD_CONFIG, CNI_CONFLIST, CNI_PLACEHOLDER, RECIPE_REV,
                                            v["K8S_VERSION"], v["KIND_VERSION"]])]
    parts += [f"{n}:{_file_digest(p)}" for n, p in sorted(binaries.items())]
    parts += [f"{f.relative_to(files)}:{_file_digest(f)}" for f in sorted(files.rglob("*")) if f.is_file()]
    parts.append(_file_digest(pause_image()))
    return _digest(parts)[:16], binaries


def image_name(key: str) -> str:
    return f"{NODE_REPO}:{versions()['K8S_VERSION']}-{key[:12]}"


# --- small images, FROM scratch --------------------------------------------------------------


def dir_archive(archive: Path, name: str, tree: Path, config: dict[str, object]) -> Path:
    """A one-layer ``docker save``-style archive of the directory ``tree`` (numeric owners 0:0)."""
    with tempfile.TemporaryDirectory(prefix="layer-", dir=CACHE) as tmp:
        layer = Path(tmp) / "layer.tar"

        def owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            return info

        with tarfile.open(layer, "w", format=tarfile.GNU_FORMAT) as t:
            for child in sorted(tree.iterdir()):
                t.add(child, arcname=child.name, filter=owner)
        diff_id = "sha256:" + _file_digest(layer)
        cfg = {"architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z", "config": config,
               "rootfs": {"type": "layers", "diff_ids": [diff_id]},
               "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/kindnode.py"}]}
        cfg_bytes = json.dumps(cfg, sort_keys=True).encode()
        cfg_name = hashlib.sha256(cfg_bytes).hexdigest() + ".json"
        (Path(tmp) / cfg_name).write_bytes(cfg_bytes)
        layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
        (Path(tmp) / "manifest.json").write_text(json.dumps([{"Config": cfg_name, "RepoTags": [name],
                                                               "Layers": [layer_name]}]))
        tmp_archive = archive.with_name(archive.name + ".tmp")
        with tarfile.open(tmp_archive, "w", format=tarfile.GNU_FORMAT) as out:
            out.add(layer, arcname=layer_name, filter=owner)
            out.add(Path(tmp) / cfg_name, arcname=cfg_name, filter=owner)
            out.add(Path(tmp) / "manifest.json", arcname="manifest.json", filter=owner)
        tmp_archive.rename(archive)
    return archive


def _ldd_closure(rootfs: Path, binaries: list[str]) -> set[str]:
    """Absolute paths (inside ``rootfs``) of the shared libraries ``binaries`` need, loader included."""
    libs: set[str] = set()
    out = _run(["chroot", str(rootfs), "ldd", *binaries], quiet=True)
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) > parts.index("=>") + 1 and parts[parts.index("=>") + 1].startswith("/"):
            libs.add(parts[parts.index("=>") + 1])
        elif parts and parts[0].startswith("/") and "ld-linux" in parts[0]:
            libs.add(parts[0])
    return libs


def _copy_in(rootfs: Path, path: str, tree: Path) -> None:
    """Copy ``path`` of ``rootfs`` (dereferenced) into ``tree`` at its canonical directory."""
    src = rootfs / path.lstrip("/")
    real_dir = Path(os.path.realpath(src.parent)).relative_to(os.path.realpath(rootfs))
    dst = tree / real_dir / src.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(os.path.realpath(src), dst)


def _merged_usr(tree: Path) -> None:
    for d in ("bin", "sbin", "lib", "lib64"):
        (tree / "usr" / d).mkdir(parents=True, exist_ok=True)
        (tree / d).symlink_to(f"usr/{d}")


def control_plane_images(rootfs: Path, binaries: dict[str, Path], work: Path) -> list[Path]:
    """The images kubeadm asks for, as docker-archives under ``work``."""
    k8s = versions()["K8S_VERSION"]
    path_env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    archives = []
    for comp in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "kube-proxy"):
        tree = work / comp
        (tree / "usr/local/bin").mkdir(parents=True)
        shutil.copy2(binaries[comp], tree / "usr/local/bin" / comp)
        (tree / "tmp").mkdir(mode=0o1777)
        name = ETCD_TAG if comp == "etcd" else f"registry.k8s.io/{comp}:{k8s}"
        if comp == "kube-proxy":
            # kube-proxy runs iptables-restore/-save, ip6tables-*, nft and conntrack.
            _merged_usr(tree)
            tools = ["/usr/sbin/xtables-nft-multi", "/usr/sbin/xtables-legacy-multi", "/usr/sbin/nft",
                     "/usr/sbin/conntrack"]
            ext_dir = Path("/usr/lib/x86_64-linux-gnu/xtables")
            exts = [str(ext_dir / p.name) for p in (rootfs / ext_dir.relative_to("/")).glob("*.so")]
            for f in [*tools, *exts, *_ldd_closure(rootfs, tools + exts)]:
                _copy_in(rootfs, f, tree)
            for variant in ("nft", "legacy"):
                for cmd in ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save",
                            "ip6tables-restore"):
                    (tree / "usr/sbin" / f"{cmd.replace('tables', 'tables-' + variant, 1)}").symlink_to(
                        f"xtables-{variant}-multi")
            for cmd in ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save",
                        "ip6tables-restore"):
                (tree / "usr/sbin" / cmd).symlink_to("xtables-nft-multi")
            (tree / "run").mkdir()
        archive = work / f"{comp}.tar"
        archives.append(dir_archive(archive, name, tree, {"Env": path_env}))
    tree = work / "coredns"
    tree.mkdir()
    shutil.copy2(binaries["coredns"], tree / "coredns")
    archives.append(dir_archive(work / "coredns.tar", COREDNS_TAG, tree,
                                {"Entrypoint": ["/coredns"], "ExposedPorts": {"53/tcp": {}, "53/udp": {}}}))
    return archives


# --- the root filesystem ---------------------------------------------------------------------


def _chroot(rootfs: Path, *argv: str) -> str:
    return _run(["chroot", str(rootfs), *argv], quiet=True)


def _install_kind_files(rootfs: Path, files: Path) -> None:
    def put(src: Path, dst: Path, mode: int) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        dst.chmod(mode)

    for f in (files / "usr/local/bin").iterdir():
        put(f, rootfs / "usr/local/bin" / f.name, 0o755)
    for f in (files / "kind").rglob("*"):
        if f.is_file():
            put(f, rootfs / "kind" / f.relative_to(files / "kind"), 0o755 if f.parent.name == "bin" else 0o644)
    for f in (files / "etc").rglob("*"):
        rel = f.relative_to(files / "etc")
        if f.is_file() and rel.name not in ("config.toml", "containerd-fuse-overlayfs.service"):
            put(f, rootfs / "etc" / rel, 0o644)
    (rootfs / "kind").chmod(0o755)
    (rootfs / "kind/bin").chmod(0o755)


def _trim_systemd(rootfs: Path) -> None:
    """What kind's base Dockerfile does: no getty, udev, tmpfiles-setup or other units a container lacks."""
    lib = rootfs / "lib/systemd/system"
    (lib / "sysinit.target.wants/systemd-tmpfiles-setup.service").unlink(missing_ok=True)
    patterns = [(lib / "multi-user.target.wants", "*"), (lib / "local-fs.target.wants", "*"),
                (lib / "sockets.target.wants", "*udev*"), (lib / "sockets.target.wants", "*initctl*"),
                (lib / "basic.target.wants", "*")]
    patterns += [(d, "*") for d in (rootfs / "etc/systemd/system").glob("*.wants")]
    for d, pat in patterns:
        for p in d.glob(pat):
            p.unlink()
    with open(rootfs / "etc/systemd/journald.conf", "a") as f:
        f.write("ReadKMsg=no\n")
    if not (rootfs / "sbin/init").exists():
        (rootfs / "sbin/init").symlink_to("/usr/lib/systemd/systemd")
    _chroot(rootfs, "systemctl", "enable", "kubelet.service", "containerd.service", "undo-mount-hacks.service")
    _chroot(rootfs, "systemctl", "mask", "systemd-binfmt.service")


def _cri_base_spec() -> str:
    spec = json.loads(_run(["ctr", "oci", "spec"], quiet=True))
    spec.setdefault("hooks", {}).setdefault("createContainer", []).append({"path": "/kind/bin/mount-product-files.sh"})
    spec["process"].pop("rlimits", None)
    return json.dumps(spec, indent=4)


def _preload(rootfs: Path, archives: list[Path], work: Path) -> None:
    """Import ``archives`` into the rootfs's containerd store with a throwaway containerd."""
    state = work / "ctrd"
    state.mkdir()
    sock = state / "c.sock"
    (state / "config.toml").write_text(
        'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n')
    proc = subprocess.Popen(["containerd", "--config", str(state / "config.toml"), "--root",
                             str(rootfs / "var/lib/containerd"), "--state", str(state / "run")],
                            stdout=subprocess.DEVNULL, stderr=open(LOGS / "preload-containerd.log", "wb"),  # noqa: SIM115
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        ctr = ["ctr", "--address", str(sock), "-n", "k8s.io"]
        wait_until(lambda: subprocess.run([*ctr, "version"], capture_output=True).returncode == 0, 30,
                   "the throwaway containerd", interval=0.1)
        for archive in archives:
            _run([*ctr, "images", "import", "--all-platforms", "--no-unpack", str(archive)], quiet=True)
        # The pause archive is tagged 3.10 (the real node's containerd default); kubeadm v1.34 wants 3.10.1.
        _run([*ctr, "images", "tag", "--force", "registry.k8s.io/pause:3.10", PAUSE], quiet=True)
        listed = _run([*ctr, "images", "ls", "-q"], quiet=True)
        log("preloaded: " + " ".join(sorted(listed.split())))
    finally:
        stop_process(proc.pid)
        with open("/proc/self/mounts") as f:
            mounts = sorted({ln.split()[1] for ln in f if ln.split()[1].startswith((str(rootfs), str(state)))},
                            reverse=True)
        for mnt in mounts:
            with contextlib.suppress(ImageError):
                _run(["umount", "-l", mnt], quiet=True)


def build_rootfs(tarball: Path, binaries: dict[str, Path], files: Path) -> None:
    """Assemble the node's root filesystem and write it as ``tarball`` (atomically)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kind-node-", dir=CACHE))
    rootfs = work / "rootfs"
    try:
        t0 = time.monotonic()
        mirror = debian_mirror()
        log(f"debootstrap {SUITE} with systemd, containerd, runc, CNI plugins from {mirror} (about a minute)")
        _run(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES), SUITE, str(rootfs), mirror],
             logfile=LOGS / "node-debootstrap.log")
        log(f"debootstrap: {time.monotonic() - t0:.0f}s")
        _install_kind_files(rootfs, files)
        _trim_systemd(rootfs)
        (rootfs / "etc/kubernetes/manifests").mkdir(parents=True, exist_ok=True)
        (rootfs / "usr/local/bin/containerd").symlink_to("/usr/bin/containerd")  # kind's unit expects it there
        (rootfs / "etc/containerd").mkdir(parents=True, exist_ok=True)
        (rootfs / "etc/containerd/config.toml").write_text(CONTAINERD_CONFIG)
        (rootfs / "etc/containerd/cri-base.json").write_text(_cri_base_spec())
        for name in ("kubeadm", "kubelet", "kubectl"):
            shutil.copy2(binaries[name], rootfs / "usr/bin" / name)
        shutil.copy2(binaries["crictl"], rootfs / "usr/local/bin/crictl")
        (rootfs / "opt/cni").mkdir(parents=True, exist_ok=True)
        (rootfs / "opt/cni/bin").symlink_to("/usr/lib/cni")
        (rootfs / "etc/cni/net.d").mkdir(parents=True, exist_ok=True)
        (rootfs / "etc/cni/net.d/10-kind-static.conflist").write_text(json.dumps(CNI_CONFLIST, indent=2))
        (rootfs / "kind/manifests").mkdir(parents=True, exist_ok=True)
        (rootfs / "kind/manifests/default-cni.yaml").write_text(CNI_PLACEHOLDER)
        (rootfs / "kind/version").write_text(versions()["K8S_VERSION"] + "\n")
        images_dir = work / "images"
        images_dir.mkdir()
        archives = [*control_plane_images(rootfs, binaries, images_dir), pause_image()]
        _preload(rootfs, archives, work)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "var/cache/debconf", "var/log", "dev"):
            d = rootfs / junk
            if d.is_dir():
                for child in d.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    elif child.name != "lock":
                        child.unlink()
        tmp = tarball.with_name(tarball.name + ".tmp")
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "--xattrs", "-cf", str(tmp), "."])
        tmp.rename(tarball)
        log(f"node root filesystem {tarball.stat().st_size / 2**20:.0f} MiB in {time.monotonic() - t0:.0f}s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def node_image(docker: DockerEngine, bins: Path | None = None) -> tuple[str, bool]:
    """The node image's name in ``docker``'s engine (built or found cached), and whether it was cached."""
    bins = bins or bin_dir()
    files = kind_files(versions()["KIND_VERSION"])
    key, binaries = inputs(bins, files)
    name = image_name(key)
    if docker.docker("image", "inspect", name, check=False).returncode == 0:
        return name, True
    tarball = CACHE / f"node-{key}.tar"
    if not tarball.exists():
        build_rootfs(tarball, binaries, files)
    t0 = time.monotonic()
    raw = f"{NODE_REPO}-rootfs:{key[:12]}"
    docker.docker("import", str(tarball), raw)
    with tempfile.TemporaryDirectory(prefix="kind-node-build-") as ctx:
        # docker 20.10 rejects `import -c STOPSIGNAL`: a one-line build sets what kind's image sets.
        (Path(ctx) / "Dockerfile").write_text(
            f"FROM {raw}\nENV container=docker\nSTOPSIGNAL SIGRTMIN+3\n"
            'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]\n')
        docker.docker("build", "-q", "-t", name, ctx)
    docker.docker("rmi", raw)
    log(f"docker import + build of {name}: {time.monotonic() - t0:.0f}s")
    return name, False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("cmd", choices=["build", "key"])
    args = ap.parse_args(argv)
    if args.cmd == "key":
        key, _ = inputs(bin_dir(), kind_files(versions()["KIND_VERSION"]))
        print(image_name(key))
        return 0
    docker = DockerEngine().up()
    try:
        t0 = time.monotonic()
        name, cached = node_image(docker)
        print(f"{name} ({'cached' if cached else 'built'} in {time.monotonic() - t0:.1f}s)")
    finally:
        docker.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
