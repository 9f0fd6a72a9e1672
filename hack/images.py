#!/usr/bin/env python3
"""Container images for a real node, built here: no registry, no Docker daemon.

Why this exists: a kubelet beside the local control plane needs the images the project runs (the
sandbox "pause" image, the operator, a model served from a Bento), but this kind of machine reaches
no container registry and runs no Docker engine - only the package registries (Debian, PyPI). So
every image is built from things those give us:

- pause: a tiny static C program (gcc), written straight into a ``docker save``-style archive;
- base: a Debian bookworm root filesystem from ``debootstrap`` with Python 3.11, committed with
  buildah; it stands in for ``python:3.11-slim`` (the operator) and BentoML's default base;
- operator: ``buildah bud`` of operator/Dockerfile on that base;
- bento: ``bentoml containerize --backend buildah`` of a packaged model on that base.

Builds are cached by their inputs (archives under ~/.cache/modeldeploy/images, buildah's store
under ~/.cache/modeldeploy/buildah, both outside the repo): a warm call only hashes files.
``import_image`` loads an archive into a containerd (namespace ``k8s.io``, the one the CRI sees),
skipping it when that containerd already has the same image.

Used by hack/localcluster.py and the tests (``sys.path`` gets hack/), and as a script:
``python hack/images.py build [pause|base|operator|bento|all]``. Standard library only; building
needs root (debootstrap, buildah's overlay storage) and the Debian packages gcc, debootstrap,
buildah (hack/setup.sh installs them); importing needs containerd's ``ctr``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))
IMAGES = CACHE / "images"
LOGS = IMAGES / "logs"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Build containers inherit nothing from the host: pip and uv reach PyPI through a proxy whose CA is
# only in the host's bundle, so it is mounted read-only into every RUN step.
CA_VOLUME = f"{CA_BUNDLE}:{CA_BUNDLE}:ro"

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"  # what containerd's CRI plugin asks for by default
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates")
BASE_ENV = {
    # Without PATH a Dockerfile's `ENV PATH=/app/.venv/bin:${PATH}` leaves only the venv on it.
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    # RUN steps see the base's ENV (build args would not reach them unless declared).
    "SSL_CERT_FILE": CA_BUNDLE,
    "PIP_CERT": CA_BUNDLE,
    # BentoML's `uv venv --python 3.11` must take this Python; never download another.
    "UV_PYTHON_DOWNLOADS": "never",
}
BASE_REPO = "localhost/modeldeploy/base"
OPERATOR_TAG = "modeldeploy/operator:0.1.0"  # the Helm chart's image.repository and appVersion
BENTO_REPO = "localhost/modeldeploy/room-price"
BENTO_NAME = "room_price"


class ImageError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], env: dict[str, str] | None = None, quiet: bool = False, cwd: Path | None = None,
         logfile: Path | None = None) -> str:
    """Run ``cmd`` and return its stdout; on failure raise ImageError with the tail of its output.

    With ``logfile`` (long builds) all output goes there instead, and the error names the file.
    """
    if logfile is not None:
        logfile.parent.mkdir(parents=True, exist_ok=True)
        with open(logfile, "w") as f:
            code = subprocess.call(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=f,
                                   stderr=subprocess.STDOUT)
        if code != 0:
            tail = logfile.read_text(errors="replace")[-4000:]
            raise ImageError(f"{' '.join(cmd[:4])}... exited with {code} (log {logfile}):\n{tail}")
        return ""
    proc = subprocess.run(cmd, env=env, cwd=cwd, text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE if quiet else subprocess.STDOUT)
    if proc.returncode != 0:
        out = (proc.stdout or "") + (proc.stderr or "")
        raise ImageError(f"{' '.join(cmd[:4])}... exited with {proc.returncode}:\n{out[-4000:]}")
    return proc.stdout


def _digest(parts: Iterable[bytes | str]) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.hexdigest()


def tree_digest(paths: Iterable[Path], root: Path = REPO) -> str:
    """Hash of the files below ``paths`` (names relative to ``root`` and contents), caches excluded."""
    parts: list[bytes | str] = []
    for top in paths:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            parts += [str(f.relative_to(root)), f.read_bytes()]
    return _digest(parts)


def _safe(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", tag)


@dataclass(frozen=True)
class Built:
    """One image: its name, the archive ``import_image`` takes, and how long getting it took."""

    name: str
    archive: Path | None
    seconds: float
    cached: bool

    def line(self) -> str:
        size = self.archive.stat().st_size / 2**20 if self.archive and self.archive.exists() else 0.0
        where = str(self.archive) if self.archive else "(buildah store only)"
        return (f"{self.name}\n    archive {where}\n    size {size:.1f} MiB, "
                f"{'cached' if self.cached else 'built'} in {self.seconds:.1f}s")


# --- buildah's own store ---------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """buildah storage of our own (not /var/lib/containers), for buildah and bentoml's buildah backend.

    The graph root is under the cache; the run root holds only locks and state and lives under
    /run. ``CONTAINERS_STORAGE_CONF`` points every subprocess at the storage.conf written here.
    The one thing buildah 1.28 still writes outside it as root is its blob-info cache
    (/var/lib/containers/cache, a small digest map; no flag moves it).
    """

    root: Path
    runroot: Path

    @property
    def conf(self) -> Path:
        return self.root / "storage.conf"

    def ensure(self) -> None:
        (self.root / "graph").mkdir(parents=True, exist_ok=True)
        self.runroot.mkdir(parents=True, exist_ok=True)
        text = (
            "# Written by hack/images.py: modeldeploy's own buildah store.\n"
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{self.root / "graph"}"\n'
            f'runroot = "{self.runroot}"\n'
            "[storage.options.overlay]\n"
            # No bind mount of the graph root onto itself: nothing stays mounted between builds.
            'skip_mount_home = "true"\n'
            'mountopt = "nodev"\n'
        )
        if not self.conf.exists() or self.conf.read_text() != text:
            self.conf.write_text(text)

    def env(self) -> dict[str, str]:
        self.ensure()
        env = dict(os.environ)
        env["CONTAINERS_STORAGE_CONF"] = str(self.conf)
        env.setdefault("BUILDAH_ISOLATION", "chroot")  # no user namespaces or runc needed for RUN
        return env

    def buildah(self, *args: str, quiet: bool = False) -> str:
        if shutil.which("buildah") is None:
            raise ImageError("no `buildah` on PATH: `apt-get install -y buildah` (make setup installs it)")
        return _run(["buildah", *args], env=self.env(), quiet=quiet)

    def image_id(self, name: str) -> str | None:
        """The image ID (config digest, without ``sha256:``) of ``name`` in this store, or None."""
        self.ensure()
        proc = subprocess.run(["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", name],
                              env=self.env(), capture_output=True, text=True, check=False)
        out = proc.stdout.strip()
        return out.removeprefix("sha256:") if proc.returncode == 0 and out else None

    def cleanup(self) -> None:
        """Remove working containers a failed build left behind (their overlay mounts go with them)."""
        with contextlib.suppress(ImageError):
            self.buildah("rm", "--all", quiet=True)

    def mounts(self) -> list[str]:
        """Mount points still under this store (should be none between builds)."""
        prefixes = (str(self.root), str(self.runroot))
        with open("/proc/self/mounts") as f:
            return [line.split()[1] for line in f if line.split()[1].startswith(prefixes)]

    def push(self, image: str, archive: Path, name: str) -> Path:
        """Write ``image`` as a ``docker save``-style archive tagged ``name`` (atomically)."""
        archive.parent.mkdir(parents=True, exist_ok=True)
        tmp = archive.with_name(archive.name + ".tmp")
        tmp.unlink(missing_ok=True)
        # By ID: pushing by name would add buildah's own name (localhost/...) to the archive's RepoTags.
        image_id = self.image_id(image)
        if image_id is None:
            raise ImageError(f"no image {image} in the buildah store {self.root}")
        self.buildah("push", "--quiet", image_id, f"docker-archive:{tmp}:{name}")
        tmp.rename(archive)
        return archive


STORE = Store(CACHE / "buildah", Path(os.environ.get("MODELDEPLOY_BUILDAH_RUNROOT",
                                                     f"/run/modeldeploy-buildah-{os.getuid()}")))


# --- pause -----------------------------------------------------------------------------------

PAUSE_C = r"""
/* modeldeploy's pause: hold a pod's namespaces. Sleep forever, reap adopted children, exit 0 on
 * SIGTERM/SIGINT (a PID 1 ignoring SIGTERM would hold the pod for its whole grace period). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) { puts("pause (modeldeploy) 3.10"); return 0; }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    for (;;) pause();
}
"""


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def docker_archive(path: Path, name: str, files: dict[str, tuple[bytes, int]], config: dict[str, Any]) -> Path:
    """A one-layer ``docker save``-style archive: layer.tar (numeric owners 0:0), config, manifest.json."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as layer:
        for fname, (data, mode) in sorted(files.items()):
            _tar_add(layer, fname, data, mode)
    layer_bytes = buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    cfg = {
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/images.py"}],
    }
    cfg_bytes = json.dumps(cfg, sort_keys=True).encode()
    cfg_name = hashlib.sha256(cfg_bytes).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = [{"Config": cfg_name, "RepoTags": [name], "Layers": [layer_name]}]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        _tar_add(tar, layer_name, layer_bytes)
        _tar_add(tar, cfg_name, cfg_bytes)
        _tar_add(tar, "manifest.json", json.dumps(manifest).encode())
    tmp.rename(path)
    return path


def _pause() -> Built:
    t0 = time.monotonic()
    archive = IMAGES / f"pause-3.10-{_digest([PAUSE_C, PAUSE_IMAGE])[:16]}.tar"
    if archive.exists():
        return Built(PAUSE_IMAGE, archive, time.monotonic() - t0, True)
    if shutil.which("gcc") is None:
        raise ImageError("no `gcc` on PATH: `apt-get install -y gcc libc6-dev` (make setup installs it)")
    with tempfile.TemporaryDirectory(prefix="modeldeploy-pause-") as tmp:
        src, out = Path(tmp) / "pause.c", Path(tmp) / "pause"
        src.write_text(PAUSE_C)
        _run(["gcc", "-Os", "-static", "-Wall", "-Werror", "-s", "-o", str(out), str(src)])
        docker_archive(archive, PAUSE_IMAGE, {"pause": (out.read_bytes(), 0o755)},
                       {"Entrypoint": ["/pause"], "User": "65535:65535"})
    return Built(PAUSE_IMAGE, archive, time.monotonic() - t0, False)


def pause_image() -> Path:
    """The pause image (``registry.k8s.io/pause:3.10``) as a docker-archive; cached by its C source."""
    archive = _pause().archive
    assert archive is not None
    return archive


# --- base ------------------------------------------------------------------------------------


def debian_mirror() -> str:
    """The Debian mirror apt uses on this host (deb822 .sources or one-line sources.list)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        if not f.is_file() or not f.name.endswith((".list", ".sources")):
            continue
        text = f.read_text(errors="replace")
        if f.name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = dict(re.findall(r"^([A-Za-z-]+):\s*(.+)$", stanza, re.M))
                if SUITE in fields.get("Suites", "").split() and "deb" in fields.get("Types", "").split():
                    return fields.get("URIs", "").split()[0]
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", line)
                if m:
                    return m.group(1)
    return "http://deb.debian.org/debian"


def _base_name() -> str:
    recipe = json.dumps({"suite": SUITE, "variant": "minbase", "packages": BASE_PACKAGES, "env": BASE_ENV,
                         "rev": 1}, sort_keys=True)
    return f"{BASE_REPO}:{SUITE}-py311-{_digest([recipe])[:12]}"


def _base() -> Built:
    t0 = time.monotonic()
    name = _base_name()
    if STORE.image_id(name):
        return Built(name, None, time.monotonic() - t0, True)
    if shutil.which("debootstrap") is None:
        raise ImageError("no `debootstrap` on PATH: `apt-get install -y debootstrap` (make setup installs it)")
    mirror = debian_mirror()
    log(f"debootstrap {SUITE} from {mirror} (about a minute)")
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
    ctr = ""
    try:
        _run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES), SUITE, str(rootfs),
              mirror], logfile=LOGS / "base-debootstrap.log")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "var/cache/debconf", "var/log"):
            d = rootfs / junk
            if d.is_dir():
                for child in d.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
        for dev in (rootfs / "dev").iterdir():  # the runtime provides /dev
            if dev.is_dir() and not dev.is_symlink():
                shutil.rmtree(dev)
            else:
                dev.unlink()
        ctr = STORE.buildah("from", "--quiet", "scratch").strip()
        mnt = STORE.buildah("mount", ctr).strip()
        try:
            _run(["cp", "-a", f"{rootfs}/.", mnt])
        finally:
            STORE.buildah("umount", ctr)
        cfg = ["config", "--cmd", "/bin/bash", "--label", f"org.opencontainers.image.description=Debian {SUITE} "
               "minbase with Python 3.11, built by modeldeploy hack/images.py"]
        for k, v in BASE_ENV.items():
            cfg += ["--env", f"{k}={v}"]
        STORE.buildah(*cfg, ctr)
        STORE.buildah("commit", "--quiet", "--rm", ctr, name)
        ctr = ""
    finally:
        if ctr:
            with contextlib.suppress(ImageError):
                STORE.buildah("rm", ctr, quiet=True)
        shutil.rmtree(rootfs, ignore_errors=True)
    return Built(name, None, time.monotonic() - t0, False)


def base_image() -> str:
    """Name of the Debian bookworm + Python 3.11 base in STORE (built once, ~1 min; cached by recipe)."""
    return _base().name


# --- operator --------------------------------------------------------------------------------


def _operator(tag: str = OPERATOR_TAG) -> Built:
    t0 = time.monotonic()
    base = base_image()
    inputs = [REPO / "pyproject.toml", REPO / "README.md", REPO / "operator", REPO / "bento"]
    key = _digest([tree_digest(inputs), str(STORE.image_id(base)), tag])[:16]
    archive = IMAGES / f"operator-{_safe(tag)}-{key}.tar"
    if archive.exists():
        return Built(tag, archive, time.monotonic() - t0, True)
    log(f"buildah bud operator/Dockerfile -> {tag} (log {LOGS / 'operator.log'})")
    try:
        _run(["buildah", "bud", "--file", "operator/Dockerfile", "--build-arg", f"PYTHON_IMAGE={base}",
              "--pull-never", "--network", "host", "--layers", "--volume", CA_VOLUME, "--tag", tag, str(REPO)],
             env=STORE.env(), cwd=REPO, logfile=LOGS / "operator.log")
    except ImageError:
        STORE.cleanup()
        raise
    STORE.push(tag, archive, tag)
    return Built(tag, archive, time.monotonic() - t0, False)


def operator_image(tag: str = OPERATOR_TAG) -> Path:
    """The operator image (operator/Dockerfile on the local base) as a docker-archive; cached by its inputs."""
    archive = _operator(tag).archive
    assert archive is not None
    return archive


# --- Bentos ----------------------------------------------------------------------------------

BENTOML_HOME = CACHE / "bentoml"  # our own BentoML store: models and Bentos built for images


def _venv_bin(name: str) -> str:
    """A command of the project's venv (bentoml and modeldeploy live there, not in this stdlib script)."""
    for d in (REPO / ".venv" / "bin", Path(sys.executable).parent):
        if (d / name).exists():
            return str(d / name)
    raise ImageError(f"no {name} in {REPO / '.venv'}: run `make setup` first")


def _model_env() -> dict[str, str]:
    env = STORE.env()
    env["BENTOML_HOME"] = str(BENTOML_HOME)
    env["BENTOML_DO_NOT_TRACK"] = "True"
    return env


def _bento_inputs() -> str:
    """What a Bento image depends on besides its model: the service code and the pinned requirements."""
    return tree_digest([REPO / "pyproject.toml", REPO / "bento" / "modeldeploy_model"])


def _containerize(source: Path | str, image_tag: str, archive: Path, base: str, t0: float) -> Built:
    env = _model_env()
    env["MODELDEPLOY_BASE_IMAGE"] = base
    meta: dict[str, Any] = {"name": image_tag}
    if isinstance(source, Path):
        card = json.loads((source / "card.json").read_text())
        meta["model_version"] = card.get("version")
        out = _run([_venv_bin("modeldeploy"), "package", "--artifact", str(source), "--name", BENTO_NAME,
                    "--base-image", base], env=env)
        m = re.search(r"^bento: (\S+)", out, re.M)
        if not m:
            raise ImageError(f"`modeldeploy package` printed no Bento tag:\n{out[-2000:]}")
        bento = m.group(1)
    else:
        bento = source
    meta["bento"] = bento
    logfile = LOGS / f"bento-{_safe(image_tag)}.log"
    log(f"bentoml containerize {bento} --backend buildah -> {image_tag} (log {logfile})")
    try:
        _run([_venv_bin("modeldeploy"), "containerize", "--bento", bento, "-t", image_tag, "--backend", "buildah"],
             env=env, logfile=logfile)
    except ImageError:
        STORE.cleanup()
        raise
    STORE.push(image_tag, archive, image_tag)
    meta["seconds"] = round(time.monotonic() - t0, 1)
    archive.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return Built(image_tag, archive, time.monotonic() - t0, False)


def bento_image(source: Path | str, image_tag: str) -> Path:
    """A model image as a docker-archive, built with ``bentoml containerize --backend buildah``.

    ``source`` is a pipeline artifact directory (packaged here into a Bento on the local base) or
    the tag ``NAME:VERSION`` of a Bento in ~/.cache/modeldeploy/bentoml built on that base.
    Cached by the artifact's files (or the Bento tag), the service code, the requirements and the base.
    """
    t0 = time.monotonic()
    base = base_image()
    what = tree_digest([Path(source)], Path(source)) if isinstance(source, Path) else source
    key = _digest([what, _bento_inputs(), str(STORE.image_id(base)), image_tag])[:16]
    archive = IMAGES / f"bento-{_safe(image_tag)}-{key}.tar"
    if not archive.exists():
        _containerize(Path(source) if isinstance(source, Path) else source, image_tag, archive, base, t0)
    return archive


# The test models v1..v4: v2 is v1's kind with faults injected at run time (env), v3 healthy, and v4 trained
# with a deliberate bug - its labels scaled by this - so it answers 200 OK, passes its gate (measured on
# the same labels) and predicts 60 % high: only a comparison with the stable's predictions catches it.
TEST_MODELS = (1, 2, 3, 4)
LABEL_SCALE = {4: 1.6}


def _test_model(version: int, image_tag: str | None = None) -> Built:
    t0 = time.monotonic()
    tag = image_tag or f"{BENTO_REPO}:v{version}"
    base = base_image()
    scale = LABEL_SCALE.get(version, 1.0)
    key = _digest(["test-model ridge", str(version), f"label scale {scale:g}", _bento_inputs(),
                   str(STORE.image_id(base)), tag])[:16]
    archive = IMAGES / f"bento-{_safe(tag)}-{key}.tar"
    if archive.exists():
        return Built(tag, archive, time.monotonic() - t0, True)
    with tempfile.TemporaryDirectory(prefix="modeldeploy-artifact-") as tmp:
        art = Path(tmp) / "artifact"
        _run([_venv_bin("modeldeploy"), "demo-artifact", "--out", str(art), "--version-seed", str(version),
              "--label-scale", f"{scale:g}"],
             env=_model_env())
        return _containerize(art, tag, archive, base, t0)


def test_model_image(version: int, image_tag: str | None = None) -> Path:
    """The test model ``version_seed=version`` (testing.build_test_artifact) as ``localhost/modeldeploy/room-price:vN``.

    Cached by the version, the service code, the requirements and the base (the artifact's card has
    a timestamp, so it is not part of the key). The image's /predict reports the card's version
    (a hash of the trained model): different for every ``version``; see ``model_version``.
    """
    archive = _test_model(version, image_tag).archive
    assert archive is not None
    return archive


def model_version(archive: Path) -> str | None:
    """The model version a Bento image built here serves (from the note written beside its archive)."""
    note = archive.with_suffix(".json")
    if not note.exists():
        return None
    version = json.loads(note.read_text()).get("model_version")
    return str(version) if version else None


# --- containerd ------------------------------------------------------------------------------


def import_test_models(node: Any) -> tuple[dict[str, str], dict[str, str]]:
    """Load the test model images v1..v4 into a real node's containerd: ("v1" -> image name,
    "v1" -> the model version its /predict reports). `node` is a localnode.RealNode."""
    images, versions = {}, {}
    for i in TEST_MODELS:
        archive = test_model_image(i)
        node.import_image(archive)
        images[f"v{i}"] = f"localhost/modeldeploy/room-price:v{i}"
        versions[f"v{i}"] = model_version(archive) or "?"
    return images, versions


def normalize(name: str) -> str:
    """A reference the way containerd's CRI stores it (``modeldeploy/operator:0.1.0`` -> ``docker.io/...``)."""
    first, _, rest = name.partition("/")
    if not rest:
        return f"docker.io/library/{name}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{name}"
    return name


def archive_image(archive: Path) -> tuple[list[str], str]:
    """(normalized names, config digest) of a docker-archive."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        if member is None:
            raise ImageError(f"{archive}: no manifest.json (not a docker-archive)")
        manifest = json.load(member)
    names = [normalize(t) for entry in manifest for t in entry.get("RepoTags") or []]
    config = manifest[0]["Config"].removesuffix(".json").rsplit("/", 1)[-1]
    return names, "sha256:" + config.removeprefix("sha256:")


def containerd_images(address: str, ctr: str = "ctr") -> dict[str, str]:
    """Image name -> target digest in namespace k8s.io of the containerd at ``address``."""
    out = _run([ctr, "--address", address, "-n", "k8s.io", "images", "ls"])
    images = {}
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 3:
            images[cols[0]] = cols[2]
    return images


def _config_digest(address: str, digest: str, ctr: str) -> str | None:
    """The config digest of the manifest (or the amd64 manifest of the index) ``digest``."""
    for _ in range(2):
        proc = subprocess.run([ctr, "--address", address, "-n", "k8s.io", "content", "get", digest],
                              capture_output=True, check=False)
        if proc.returncode != 0:
            return None
        doc = json.loads(proc.stdout)
        if "config" in doc:
            return str(doc["config"]["digest"])
        manifests = [m for m in doc.get("manifests", [])
                     if m.get("platform", {}).get("architecture") in (None, "amd64")]
        if not manifests:
            return None
        digest = manifests[0]["digest"]
    return None


def import_image(archive: Path, address: str, ctr: str = "ctr") -> list[str]:
    """Import a docker-archive into namespace k8s.io of the containerd at ``address``; return its names.

    Skipped when every name is already there with the same image (config digest). Pods then use
    the names with ``imagePullPolicy: Never`` or ``IfNotPresent`` (never a ``latest`` tag).
    """
    names, config = archive_image(archive)
    present = containerd_images(address, ctr)
    if names and all(n in present and _config_digest(address, present[n], ctr) == config for n in names):
        return names
    _run([ctr, "--address", address, "-n", "k8s.io", "images", "import", "--all-platforms", str(archive)])
    missing = [n for n in names if n not in containerd_images(address, ctr)]
    if missing:
        raise ImageError(f"ctr import of {archive} did not create {', '.join(missing)}")
    return names


# --- CLI -------------------------------------------------------------------------------------


def build(which: str) -> list[Built]:
    """Build (or find cached) the images named by ``which``: pause, base, operator, bento or all."""
    out: list[Built] = []
    if which in ("pause", "all"):
        out.append(_pause())
    if which in ("base", "all"):
        out.append(_base())
    if which in ("operator", "all"):
        out.append(_operator())
    if which in ("bento", "all"):
        out += [_test_model(v) for v in TEST_MODELS]
    return out


@contextlib.contextmanager
def _timed(label: str) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    log(f"{label}: {time.monotonic() - t0:.1f}s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the images (cached by their inputs) and print where they are")
    b.add_argument("which", nargs="?", default="all", choices=["pause", "base", "operator", "bento", "all"])
    i = sub.add_parser("import", help="import archives into a containerd (namespace k8s.io)")
    i.add_argument("--address", required=True, help="containerd's socket")
    i.add_argument("archives", nargs="+", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "build":
            for built in build(args.which):
                print(built.line())
                if built.archive and (version := model_version(built.archive)):
                    print(f"    model_version {version}")
        else:
            for archive in args.archives:
                with _timed(f"import {archive.name}"):
                    print(" ".join(import_image(archive, args.address)))
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if leftover := STORE.mounts():
            log(f"warning: still mounted under the buildah store: {leftover}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
