"""Start a served model in a subprocess, for tests, benchmarks and the canary end-to-end tests.

Why a subprocess running the real ``bentoml serve``: the operator deploys exactly that process, and
Prometheus scrapes exactly its /metrics. An in-process test client would skip the parts that
break in production (the supervisor, worker start-up, the metrics multiprocess directory).

Quick use (Python)::

    from modeldeploy_model.testing import build_test_artifact, free_port, serve_subprocess

    art = build_test_artifact(tmp_path / "art", version_seed=1)   # ~2 s, scikit-learn only
    with serve_subprocess(art, port=free_port(),
                          env={"MODELDEPLOY_FAULT_ERROR_RATE": "0.5"}) as server:
        httpx.post(server.url + "/predict", json={"rows": [[50, 3, 1]]})

``serve_subprocess(artifact_dir, port=None, env=None, *, host="127.0.0.1", timeout=120.0,
log_path=None) -> ServedModel`` returns once ``/readyz`` answers 200 (polled with a deadline) and
raises ``ServerStartError`` with the server log's tail if it exits or times out (``ValueError`` at
once for a malformed fault setting). ``ServedModel``
has ``url``, ``port``, ``pid``, ``log_path`` and ``stop()`` (SIGTERM to its own process group,
SIGKILL after a deadline); use it as a context manager or call ``stop()`` in a ``finally``.
Fault injection: ``MODELDEPLOY_FAULT_ERROR_RATE`` (0..1) and ``MODELDEPLOY_FAULT_LATENCY_MS``
in ``env``; both off by default. ``BENTOML_HOME`` defaults to a fresh temporary directory.

Same from the shell::

    modeldeploy demo-artifact --out /tmp/art --version-seed 1
    MODELDEPLOY_FAULT_ERROR_RATE=0.5 modeldeploy serve --artifact /tmp/art --host 127.0.0.1 --port 3001
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from modeldeploy_model import config

SERVICE_IMPORT = "modeldeploy_model.service:ModelService"


class ServerStartError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def serve_command(target: str = SERVICE_IMPORT, host: str = "127.0.0.1", port: int = 3000) -> list[str]:
    """The ``bentoml serve`` command line for a service import path or a Bento tag."""
    return [sys.executable, "-m", "bentoml", "serve", target, "--host", host, "--port", str(port)]


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")  # no usage analytics: no network at run time
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra or {})
    return env


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _descendants(pid: int) -> list[tuple[int, bytes]]:
    """(pid, cmdline) of every process below ``pid`` (Linux /proc; empty elsewhere)."""
    out: list[tuple[int, bytes]] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            out.append((child, _cmdline(child)))
            out.extend(_descendants(child))
    return out


@dataclass
class ServedModel:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    _cleanup: list[Path] = field(default_factory=list)
    _tree: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        # BentoML's worker runs in a process group of its own: remember the whole tree now, so a
        # worker cannot outlive a supervisor that had to be killed.
        tree = list({*self._tree, *_descendants(self.process.pid)})
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid, cmdline in tree:
            if _cmdline(pid) == cmdline:  # still the same process, not a reused pid
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for p in self._cleanup:
            shutil.rmtree(p, ignore_errors=True)

    def __enter__(self) -> ServedModel:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def wait_ready(url: str, deadline_s: float, process: subprocess.Popen[bytes] | None = None,
               path: str = "/readyz") -> bool:
    """Poll ``url + path`` until 200, the process exits, or the deadline passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process is not None and process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + path, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.1)
    return False


def start_server(target: str, port: int | None = None, env: dict[str, str] | None = None, *,
                 host: str = "127.0.0.1", timeout: float = 120.0, log_path: Path | None = None,
                 cwd: Path | None = None) -> ServedModel:
    """Start ``bentoml serve TARGET`` (import path or Bento tag) and wait until it is ready."""
    from modeldeploy_model import faults

    port = port or free_port(host)
    cleanup: list[Path] = []
    extra = dict(env or {})
    faults.from_env({**os.environ, **extra})  # a bad value fails here, not in a worker restart loop
    if "BENTOML_HOME" not in extra and "BENTOML_HOME" not in os.environ:
        home = Path(tempfile.mkdtemp(prefix="bentoml-home-"))
        cleanup.append(home)
        extra["BENTOML_HOME"] = str(home)
    if log_path is None:
        logdir = Path(tempfile.mkdtemp(prefix="modeldeploy-serve-"))
        cleanup.append(logdir)
        log_path = logdir / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(serve_command(target, host, port), env=base_env(extra), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=str(cwd) if cwd else None)
    server = ServedModel(f"http://{host}:{port}", port, proc, log_path, cleanup)
    if not wait_ready(server.url, timeout, proc):
        tail = server.log_tail()
        code = proc.poll()
        server.stop()
        state = f"exited with code {code}" if code is not None else f"not ready after {timeout:.0f}s"
        raise ServerStartError(f"bentoml serve {target} on {host}:{port} {state}; log tail:\n{tail}")
    server._tree = _descendants(proc.pid)
    return server


def serve_subprocess(artifact_dir: str | os.PathLike[str], port: int | None = None,
                     env: dict[str, str] | None = None, *, host: str = "127.0.0.1", timeout: float = 120.0,
                     log_path: Path | None = None) -> ServedModel:
    """Serve a pipeline artifact directory with ``bentoml serve`` (see the module docstring)."""
    from modeldeploy_model.runtime import check_artifact

    check_artifact(artifact_dir)
    extra = dict(env or {})
    extra[config.ENV_ARTIFACT_DIR] = str(Path(artifact_dir).resolve())
    return start_server(SERVICE_IMPORT, port, extra, host=host, timeout=timeout, log_path=log_path)


def build_test_artifact(out_dir: str | os.PathLike[str], version_seed: int = 0, kind: str = "ridge",
                        n_samples: int = 400, quantize: bool = False, label_scale: float = 1.0) -> Path:
    """Train a small scikit-learn model on synthetic room prices and write its artifact to ``out_dir``.

    Different ``version_seed`` values give different data and hence a different model version,
    which is what a stable/canary pair needs. Takes a couple of seconds; no TensorFlow. ``label_scale``
    trains on labels multiplied by it (`data.scaled`): a model that passes its gate and predicts wrong.
    """
    from modeldeploy_model.pipeline import stage_data, stage_evaluate, stage_export, stage_train
    from modeldeploy_model.train import TrainOptions

    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="modeldeploy-work-") as tmp:
        work = Path(tmp)
        stage_data(work, "room_price", n_samples=n_samples, seed=version_seed, label_scale=label_scale)
        stage_train(work, (kind,), TrainOptions(seed=version_seed, n_estimators=20, max_iter=50))
        stage_evaluate(work)
        stage_export(work, quantize=quantize)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(work / "artifact", out)
    return out
