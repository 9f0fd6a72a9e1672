"""The images a real node runs, built here without a registry and imported into a real containerd.

hack/images.py builds pause, the Debian base, the operator and the v1 test model (cached by their
inputs under ~/.cache/modeldeploy: minutes cold, a second warm); a throwaway containerd of our own
(own root, state and socket under tmp_path, CRI plugin off) imports them into namespace k8s.io, the
one the kubelet's CRI sees. What a pod needs from each image is checked in the stored config: the
name the manifests use, and a non-root user the restricted Pod Security profile accepts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import images

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap and buildah's overlay store need root"),
]


def _mounts_under(d: Path) -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(str(d))]


@contextlib.contextmanager
def scratch_containerd(d: Path) -> Iterator[str]:
    """A containerd of our own under ``d`` (no CRI, nothing under /var/lib or /run); yields its socket."""
    d.mkdir(parents=True, exist_ok=True)
    sock = d / "containerd.sock"
    skip = ["io.containerd.grpc.v1.cri"] + [f"io.containerd.snapshotter.v1.{s}"
                                            for s in ("aufs", "btrfs", "zfs", "devmapper")]
    (d / "config.toml").write_text(
        "version = 2\n"
        f'root = "{d / "root"}"\nstate = "{d / "state"}"\n'
        f"disabled_plugins = {json.dumps(skip)}\n"
        f'[grpc]\n  address = "{sock}"\n'
        f'[ttrpc]\n  address = "{sock}.ttrpc"\n'
        f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{d / "opt"}"\n'
    )
    with open(d / "containerd.log", "wb") as log:
        proc = subprocess.Popen(["containerd", "--config", str(d / "config.toml")], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["ctr", "--address", str(sock), "version"], capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("containerd did not start:\n" + (d / "containerd.log").read_text()[-3000:])
            time.sleep(0.2)
        yield str(sock)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for m in reversed(_mounts_under(d)):
            subprocess.run(["umount", m], check=False)
        assert not _mounts_under(d), f"still mounted: {_mounts_under(d)}"
        shutil.rmtree(d, ignore_errors=True)


def _content(sock: str, digest: str) -> dict[str, Any]:
    out = subprocess.run(["ctr", "--address", sock, "-n", "k8s.io", "content", "get", digest],
                         capture_output=True, check=True).stdout
    doc: dict[str, Any] = json.loads(out)
    return doc


def _image_config(sock: str, name: str) -> dict[str, Any]:
    """The ``config`` section of ``name``'s image config as containerd stored it."""
    target = images.containerd_images(sock)[name]
    config = images._config_digest(sock, target, "ctr")
    assert config, f"no config for {name} ({target})"
    cfg: dict[str, Any] = _content(sock, config).get("config") or {}
    return cfg


@pytest.mark.timeout(2400)
def test_build_and_import_into_containerd(tmp_path: Path) -> None:
    missing = [c for c in ("gcc", "debootstrap", "buildah", "containerd", "ctr") if shutil.which(c) is None]
    assert not missing, f"missing {missing}: run `make setup` (hack/setup.sh installs them)"

    t0 = time.monotonic()
    pause = images.pause_image()
    base = images.base_image()
    operator = images.operator_image()
    model = images.test_model_image(1)
    built_s = time.monotonic() - t0
    assert base.startswith(images.BASE_REPO + ":bookworm-py311-")
    assert images.model_version(model), "the v1 image records the model version it serves"
    assert not images.STORE.mounts(), "a build left something mounted under the buildah store"

    archives = {images.PAUSE_IMAGE: pause, "docker.io/modeldeploy/operator:0.1.0": operator,
                "localhost/modeldeploy/room-price:v1": model}
    with scratch_containerd(tmp_path / "containerd") as sock:
        for name, archive in archives.items():
            assert images.import_image(archive, sock) == [name]
        listed = images.containerd_images(sock)
        assert set(archives) <= set(listed), listed

        t1 = time.monotonic()
        for archive in archives.values():  # already there, same image: nothing imported
            images.import_image(archive, sock)
        assert time.monotonic() - t1 < 10

        op = _image_config(sock, "docker.io/modeldeploy/operator:0.1.0")
        assert op.get("User") == "65532:65532"
        assert op.get("Entrypoint") == ["modeldeploy"]
        bento = _image_config(sock, "localhost/modeldeploy/room-price:v1")
        assert bento.get("User", "").split(":")[0] in ("1034", "bentoml")
        assert any(e.startswith("BENTOML_HOME=") for e in bento.get("Env", []))
        assert _image_config(sock, images.PAUSE_IMAGE).get("Entrypoint") == ["/pause"]
    print(f"images ready in {built_s:.1f}s")
