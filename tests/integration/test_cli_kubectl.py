"""The CLI as kubectl users drive it, against the real API server and objects whose status the test writes.

No operator runs in this module (a module of its own for that reason: test_cli.py's operator would
overwrite the status these tests patch), so each status below is exactly what the API holds:
output formats, exit codes per phase, `--watch` following status patches, and the kubectl plugin
through the real kubectl.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from modeldeploy import GROUP, PLURAL, VERSION, exitcodes
from modeldeploy_model.testing import free_port
from tests.conftest import REPO
from tests.integration.test_operator import Cluster, mdep

pytestmark = pytest.mark.cluster

CANARY = {"strategy": "Canary", "canary": {"steps": [10, 50], "interval": "10m"}}
STABLE = {"image": "registry.example/room-price:v1", "bento": "room_price:v1", "hash": "aaaaaaaaaa"}
CANARY_REV = {"image": "registry.example/room-price:v2", "bento": "room_price:v2", "hash": "bbbbbbbbbb"}
T0 = "2026-12-02T10:00:00Z"


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modeldeploy.cli", *args], env=env, text=True, capture_output=True,
                          timeout=timeout)


@pytest.fixture
def k(api_client: client.ApiClient, namespace: str, crd: str) -> Cluster:
    return Cluster(api_client, namespace)


def set_status(k: Cluster, name: str, **status: Any) -> None:
    """Write status through the status subresource, as the operator does."""
    generation = k.get(name)["metadata"]["generation"]
    k.custom.patch_namespaced_custom_object_status(GROUP, VERSION, k.ns, PLURAL, name,
                                                   {"status": {"observedGeneration": generation, **status}})


def canary_status(step: int, weight: int, timeline: list[tuple[int, int, str]], **extra: Any) -> dict[str, Any]:
    return {"phase": "Progressing", "stable": STABLE, "canary": CANARY_REV, "currentStep": step, "canaryWeight": weight,
            "message": f"canary bbbbbbbbbb at step {step}/2",
            "timeline": [{"step": s, "weight": w, "verdict": v, "time": T0} for s, w, v in timeline], **extra}


@pytest.mark.parametrize(("phase", "code"), [
    ("Healthy", 0), ("Progressing", 0), ("Paused", 0), ("Pending", 0),
    ("RolledBack", exitcodes.ROLLED_BACK), ("Degraded", exitcodes.DEGRADED), ("Failed", exitcodes.FAILED),
])
def test_status_exit_code_follows_the_phase(k: Cluster, kube_env: dict[str, str], phase: str, code: int) -> None:
    k.create(mdep("p", rollout=CANARY))
    set_status(k, "p", phase=phase, message=f"now {phase}")
    out = cli(kube_env, "status", "p", "-n", k.ns)
    assert out.returncode == code, out.stderr
    assert f"Phase:     {phase}" in out.stdout and out.stderr == ""


def test_status_output_formats(k: Cluster, kube_env: dict[str, str]) -> None:
    k.create(mdep("fmt", rollout=CANARY))
    set_status(k, "fmt", **canary_status(1, 20, [(1, 0, "Started"), (1, 20, "Pass")], conditions=[
        {"type": "Ready", "status": "True", "reason": "Serving", "message": "2/2 ready"}]))
    stored = k.get("fmt")
    as_json = cli(kube_env, "status", "fmt", "-n", k.ns, "-o", "json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == stored
    as_yaml = cli(kube_env, "status", "fmt", "-n", k.ns, "-o", "yaml")
    assert as_yaml.returncode == 0 and yaml.safe_load(as_yaml.stdout) == stored
    wide = cli(kube_env, "status", "fmt", "-n", k.ns, "-o", "wide").stdout
    text = cli(kube_env, "status", "fmt", "-n", k.ns).stdout
    for out in (wide, text):
        assert "Canary:    room_price:v2  (bbbbbbbbbb)  step 1/2  target 10%" in out
        assert any(line.split()[1:] == ["1/2", "10%", "##........", "20%", "Pass"] for line in out.splitlines())
    assert "Conditions:" in wide and "2/2 ready" in wide and "Conditions:" not in text


def test_namespace_and_context_come_from_the_kubeconfig(k: Cluster, kube_env: dict[str, str],
                                                        tmp_path: Path) -> None:
    """No -n: the context's namespace, as kubectl; --context picks another context of the file."""
    k.create(mdep("ctx", rollout=CANARY))
    cfg = yaml.safe_load(Path(kube_env["KUBECONFIG"]).read_text())
    ctx = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])
    cfg["contexts"] = [ctx, {"name": "mine", "context": {**ctx["context"], "namespace": k.ns}}]
    kc = tmp_path / "kubeconfig"
    kc.write_text(yaml.safe_dump(cfg))
    assert cli(kube_env, "status", "ctx", "--kubeconfig", str(kc)).returncode == 1  # current context: default ns
    out = cli(kube_env, "status", "ctx", "--kubeconfig", str(kc), "--context", "mine")
    assert out.returncode == 0 and f"ModelDeployment {k.ns}/ctx" in out.stdout, out.stderr


class Watcher:
    """`modeldeploy status NAME --watch` as a subprocess whose lines are read with deadlines."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "modeldeploy.cli", "status", *args, "--watch"], env=env,
                                     text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=1)
        self.sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)

    def line(self, timeout: float = 20) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sel.select(timeout=max(0.0, deadline - time.monotonic())):
                return self.proc.stdout.readline()
        raise AssertionError(f"no watch line within {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.sel.close()


@pytest.fixture
def watcher() -> Iterator[list[Watcher]]:
    started: list[Watcher] = []
    try:
        yield started
    finally:
        for w in started:
            w.stop()


def test_watch_follows_status_patches_and_exits_with_the_final_phase(k: Cluster, kube_env: dict[str, str],
                                                                     watcher: list[Watcher]) -> None:
    k.create(mdep("w", rollout=CANARY))
    set_status(k, "w", **canary_status(1, 0, [(1, 0, "Started")]))
    w = Watcher(kube_env, "w", "-n", k.ns, "--timeout", "120")
    watcher.append(w)
    first = w.line()
    assert "Progressing" in first and "step 1/2" in first and "canary 0%" in first and "last Started" in first
    set_status(k, "w", message="only the message changed")  # not a change of phase/step/weight/verdict: no line
    set_status(k, "w", canaryWeight=20)
    assert "canary 20%" in w.line()  # the next line is the weight's: the message alone printed none
    set_status(k, "w", **canary_status(2, 50, [(1, 0, "Started"), (1, 20, "Pass")]))
    line = w.line()
    assert "step 2/2" in line and "canary 50%" in line and "last Pass" in line
    set_status(k, "w", **canary_status(0, 0, [(1, 0, "Started"), (1, 20, "Pass"), (2, 50, "Fail"),
                                            (2, 50, "RolledBack")], phase="RolledBack", canary=None,
                                       message="canary bbbbbbbbbb rolled back: error-rate = 0.2, want <= 0.01"))
    line = w.line()
    assert "RolledBack" in line and "last RolledBack" in line and "error-rate = 0.2" in line
    assert w.proc.wait(timeout=20) == exitcodes.ROLLED_BACK


def test_watch_ends_at_once_on_a_final_phase_and_times_out_with_7(k: Cluster, kube_env: dict[str, str]) -> None:
    k.create(mdep("t", rollout=CANARY))
    set_status(k, "t", phase="Healthy", stable=STABLE)
    assert cli(kube_env, "status", "t", "-n", k.ns, "--watch").returncode == 0
    set_status(k, "t", **canary_status(1, 20, [(1, 0, "Started")]))
    started = time.monotonic()
    out = cli(kube_env, "status", "t", "-n", k.ns, "--watch", "--timeout", "2s")
    assert out.returncode == exitcodes.WATCH_TIMEOUT
    assert out.stderr == f"error: timed out after 2s: {k.ns}/t is still Progressing\n"
    assert 2 <= time.monotonic() - started < 20


def test_not_found_and_unreachable_are_one_line(k: Cluster, kube_env: dict[str, str], tmp_path: Path) -> None:
    out = cli(kube_env, "status", "nope", "-n", k.ns)
    assert out.returncode == 1
    assert out.stderr == (f'error: modeldeployment "nope" not found in namespace "{k.ns}" '
                          "(list them with: kubectl get mdep -A)\n")
    # The same kubeconfig with its server moved to a free port where nothing listens.
    cfg = yaml.safe_load(Path(kube_env["KUBECONFIG"]).read_text())
    port = free_port()
    for c in cfg["clusters"]:
        c["cluster"]["server"] = f"https://127.0.0.1:{port}"
    kc = tmp_path / "down"
    kc.write_text(yaml.safe_dump(cfg))
    for argv in (("status", "x"), ("pause", "x"), ("promote", "x"), ("status", "x", "--watch")):
        started = time.monotonic()
        out = cli(kube_env | {"KUBECONFIG": str(kc)}, *argv)
        assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
        assert f"cannot reach the API server at https://127.0.0.1:{port}: connection refused" in out.stderr
        assert time.monotonic() - started < 10


def plugin_dir(tmp_path: Path) -> Path:
    """A directory holding the plugin's executables made from pyproject's console-script entries, as pip makes them."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    d = tmp_path / "bin"
    d.mkdir()
    for name in ("kubectl-modeldeploy", "kubectl_complete-modeldeploy"):
        module, func = scripts[name].split(":")
        script = d / name
        script.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n")
        script.chmod(0o755)
    return d


def test_kubectl_plugin_runs_the_same_commands(k: Cluster, kube_env: dict[str, str], tmp_path: Path) -> None:
    k.create(mdep("plug", rollout=CANARY))
    set_status(k, "plug", phase="Degraded", message="Secret missing")
    env = kube_env | {"PATH": f"{plugin_dir(tmp_path)}{os.pathsep}{kube_env['PATH']}"}

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", *args], env=env, text=True, capture_output=True, timeout=60)

    assert "kubectl-modeldeploy" in kubectl("plugin", "list").stdout
    out = kubectl("modeldeploy", "status", "plug", "-n", k.ns, "-o", "json")
    assert out.returncode == exitcodes.DEGRADED, out.stderr
    assert json.loads(out.stdout)["status"]["message"] == "Secret missing"
    assert kubectl("modeldeploy", "--help").stdout.startswith("usage: kubectl modeldeploy")
    assert kubectl("modeldeploy", "pause", "plug", "-n", k.ns).returncode == 0
    assert k.get("plug")["spec"]["paused"] is True
    # kubectl's own completion asks the plugin (kubectl_complete-modeldeploy)
    completed = kubectl("__complete", "modeldeploy", "status", "plug", "-o", "").stdout.splitlines()
    assert {"json", "yaml", "wide"} <= set(completed), completed
