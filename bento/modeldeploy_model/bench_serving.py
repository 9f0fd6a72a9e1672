"""Serving benchmark: our Bento (scikit-learn, ONNX, int8 ONNX artifacts) against MLServer.

Why this shape: the question a user asks is "how much faster is this than the server I'd use
otherwise, on my model, on my machine". So every target serves the *same* trained model (one
scikit-learn MLP pipeline; the ONNX and int8 files are exports of it), runs on this machine one at a
time, with one serving worker, and is driven by the *same* load generator holding a fixed number of
requests in flight, each request one row (online inference): ``wrk`` (Debian package ``wrk``) when
installed - a C load generator leaves the second core to the server instead of competing for it -
else an asyncio + aiohttp client (the report says which).
Results are ratios to MLServer (``mlserver`` + ``mlserver-sklearn`` from PyPI, installed by this
module into its own ``.venv-mlserver`` because their pins conflict with ours).

Bounded in count and time: each target gets a warm-up, then at most ``--duration`` seconds or
``--max-requests`` requests, whichever comes first; every server is stopped in a ``finally``.

    .venv/bin/python -m modeldeploy_model.bench_serving            # writes bench/results/serving.json
    .venv/bin/python -m modeldeploy_model.bench_serving --skip-mlserver --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from modeldeploy_model import runtime
from modeldeploy_model.testing import free_port, serve_subprocess, wait_ready

MODEL_NAME = "room-price"
ROW = [64.5, 4.0, 1.0]


@dataclass
class LoadResult:
    target: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput_rps: float
    p50_ms: float
    p99_ms: float


async def _drive(url: str, body: dict[str, Any], concurrency: int, duration_s: float, max_requests: int,
                 warmup_s: float) -> tuple[list[float], int, float]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    sent = 0
    payload = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    conn = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        async def one() -> bool:
            async with session.post(url, data=payload, headers=headers) as resp:
                await resp.read()
                return resp.status == 200

        warm_end = time.perf_counter() + warmup_s
        while time.perf_counter() < warm_end:
            await asyncio.gather(*(one() for _ in range(concurrency)))

        start = time.perf_counter()
        end = start + duration_s

        async def worker() -> None:
            nonlocal errors, sent
            while sent < max_requests and time.perf_counter() < end:
                sent += 1
                t0 = time.perf_counter()
                try:
                    ok = await one()
                except (TimeoutError, aiohttp.ClientError):
                    ok = False
                latencies.append((time.perf_counter() - t0) * 1000)
                if not ok:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - start


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _wrk_ms(text: str) -> float:
    m = re.match(r"^([0-9.]+)(us|ms|s|m)$", text.strip())
    if not m:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(target: str, concurrency: int, out: str) -> LoadResult:
    """Read requests, errors, throughput and p50/p99 from ``wrk --latency`` output."""
    reqs = re.search(r"(\d+) requests in ([0-9.]+)(us|ms|s|m)", out)
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (reqs and rps and p50 and p99):
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(g) for g in sock.groups()) if sock else 0)
    secs = _wrk_ms(reqs.group(2) + reqs.group(3)) / 1000
    total = int(reqs.group(1))
    ok_rps = (total - errors) / secs if secs else 0.0
    return LoadResult(target, concurrency, total, errors, round(secs, 3), round(ok_rps, 1),
                      round(_wrk_ms(p50.group(1)), 3), round(_wrk_ms(p99.group(1)), 3))


def run_wrk(target: str, url: str, body: dict[str, Any], concurrency: int, duration_s: float,
            warmup_s: float) -> LoadResult:
    wrk = shutil.which("wrk")
    assert wrk is not None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write('wrk.method = "POST"\n')
        f.write(f"wrk.body = [==[{json.dumps(body)}]==]\n")  # JSON may contain "]]"
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        script = f.name
    try:
        base = [wrk, "-t1", f"-c{concurrency}", "-s", script, "--timeout", "30s"]
        if warmup_s > 0:
            subprocess.run([*base, f"-d{max(1, round(warmup_s))}s", url], capture_output=True, check=True, timeout=120)
        out = subprocess.run([*base, f"-d{max(1, round(duration_s))}s", "--latency", url], capture_output=True,
                             text=True, check=True, timeout=duration_s + 120).stdout
    finally:
        os.unlink(script)
    return parse_wrk(target, concurrency, out)


def run_load(target: str, url: str, body: dict[str, Any], concurrency: int, duration_s: float, max_requests: int,
             warmup_s: float, generator: str = "auto") -> LoadResult:
    if generator == "wrk" or (generator == "auto" and shutil.which("wrk")):
        return run_wrk(target, url, body, concurrency, duration_s, warmup_s)
    lat, errors, secs = asyncio.run(_drive(url, body, concurrency, duration_s, max_requests, warmup_s))
    arr = np.asarray(lat) if lat else np.asarray([float("nan")])
    ok = len(lat) - errors
    return LoadResult(target, concurrency, len(lat), errors, round(secs, 3), round(ok / secs, 1),
                      round(float(np.percentile(arr, 50)), 3), round(float(np.percentile(arr, 99)), 3))


# --- the model and its artifact variants -----------------------------------------------------


def build_artifacts(root: Path, samples: int = 2000) -> dict[str, Path]:
    """Train one MLP pipeline; return one artifact dir per serving runtime (same model in each)."""
    from modeldeploy_model.export import quantize_int8
    from modeldeploy_model.pipeline import stage_data, stage_evaluate, stage_export, stage_train

    work = root / "work"
    stage_data(work, "room_price", n_samples=samples, seed=11)
    stage_train(work, ("mlp",))
    stage_evaluate(work)
    stage_export(work, quantize=True)
    art = work / "artifact"
    if not (art / runtime.ONNX_INT8_FILE).exists():  # failed parity: benchmark it anyway, say so
        quantize_int8(art / runtime.ONNX_FILE, art / runtime.ONNX_INT8_FILE)
    card = runtime.load_card(art)
    out = {}
    for rt in ("sklearn", "onnx", "onnx-int8"):
        d = root / f"artifact-{rt}"
        shutil.copytree(art, d)
        (d / runtime.CARD_FILE).write_text(json.dumps({**card, "runtime": rt}, default=float))
        out[rt] = d
    return out


# --- MLServer --------------------------------------------------------------------------------


def ensure_mlserver_venv(venv: Path) -> Path:
    """Create ``venv`` with mlserver + mlserver-sklearn (and our scikit-learn version) if missing."""
    venv = venv.resolve()
    py = venv / "bin" / "python"
    mlserver = venv / "bin" / "mlserver"
    if not mlserver.exists():
        print(f"creating {venv} with mlserver + mlserver-sklearn (one-time, from PyPI)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # uvloop 0.22+ makes MLServer 1.7's inference worker processes die at start-up
        # ("There is no current event loop"), so it is held below that.
        subprocess.run([str(py), "-m", "pip", "install", "-q", "mlserver", "mlserver-sklearn", "uvloop<0.22"],
                       check=True)
    ours = metadata.version("scikit-learn")
    theirs = subprocess.run([str(py), "-c", "import sklearn; print(sklearn.__version__)"], capture_output=True,
                            text=True, check=False).stdout.strip()
    if theirs != ours:
        # The pickled pipeline must be loaded by the scikit-learn that wrote it.
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"scikit-learn=={ours}"], check=True)
    return mlserver


@contextlib.contextmanager
def mlserver_running(mlserver: Path, model_file: Path, workdir: Path, parallel_workers: int) -> Iterator[str]:
    port, grpc, metrics = free_port(), free_port(), free_port()
    mdir = workdir / f"mlserver-{parallel_workers}"
    (mdir / "model").mkdir(parents=True)
    shutil.copy2(model_file, mdir / "model" / "model.joblib")
    (mdir / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": grpc, "metrics_port": metrics,
        "parallel_workers": parallel_workers, "debug": False,
    }))
    (mdir / "model" / "model-settings.json").write_text(json.dumps({
        "name": MODEL_NAME, "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }))
    log = open(mdir / "server.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([str(mlserver), "start", str(mdir)], cwd=str(mdir), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_ready(url, 120, proc, path=f"/v2/models/{MODEL_NAME}/ready"):
            raise RuntimeError(f"MLServer did not become ready; log:\n{(mdir / 'server.log').read_text()[-3000:]}")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        log.close()


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench-serving", description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per target (default 10)")
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target (default 2)")
    ap.add_argument("--max-requests", type=int, default=200_000, help="cap per target (default 200000)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; best per target kept (default 2)")
    ap.add_argument("--skip-mlserver", action="store_true", help="only our Bento targets")
    ap.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto",
                    help="load generator: wrk if installed (auto), or the asyncio+aiohttp client")
    ap.add_argument("--mlserver-venv", type=Path, default=Path(".venv-mlserver"))
    ap.add_argument("--output", type=Path, default=Path("bench/results/serving.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

    rounds: list[list[LoadResult]] = []
    tmp = Path(tempfile.mkdtemp(prefix="modeldeploy-bench-"))
    env = {"BENTOML_HOME": str(tmp / "bentoml")}
    try:
        arts = build_artifacts(tmp)
        mlserver = None if args.skip_mlserver else ensure_mlserver_venv(args.mlserver_venv)
        bento_body = {"rows": [ROW]}
        v2_body = {"inputs": [{"name": "rows", "shape": [1, 3], "datatype": "FP64", "data": ROW}]}
        # Targets are interleaved over rounds and the best round of each is kept: other work on the
        # machine then hurts every target alike instead of whichever happened to run during it.
        for rnd in range(args.rounds):
            this: list[LoadResult] = []
            for rt, art in arts.items():
                with serve_subprocess(art, env=env) as server:
                    res = run_load(f"bento-{rt}", server.url + "/predict", bento_body, args.concurrency,
                                   args.duration, args.max_requests, args.warmup, args.generator)
                print(f"round {rnd + 1}: {json.dumps(asdict(res))}", flush=True)
                this.append(res)
            if mlserver is not None:
                for workers in (1, 0):  # MLServer's default (one inference worker process), and in-process
                    workdir = tmp / f"round{rnd}"
                    with mlserver_running(mlserver, arts["sklearn"] / runtime.SKLEARN_FILE, workdir, workers) as url:
                        res = run_load(f"mlserver-parallel_workers={workers}", f"{url}/v2/models/{MODEL_NAME}/infer",
                                       v2_body, args.concurrency, args.duration, args.max_requests, args.warmup,
                                       args.generator)
                    print(f"round {rnd + 1}: {json.dumps(asdict(res))}", flush=True)
                    this.append(res)
            rounds.append(this)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    results = [max((r[i] for r in rounds), key=lambda x: (x.errors == 0, x.throughput_rps))
               for i in range(len(rounds[0]))]
    use_wrk = args.generator == "wrk" or (args.generator == "auto" and shutil.which("wrk") is not None)
    generator_name = "wrk -t1 (Debian wrk)" if use_wrk else "asyncio + aiohttp client"
    by = {r.target: r for r in results}
    ratios: dict[str, Any] = {}
    ml = [r for r in results if r.target.startswith("mlserver") and r.errors == 0]
    if ml:
        best = max(ml, key=lambda r: r.throughput_rps)  # compare against MLServer's better configuration
        for rt in ("sklearn", "onnx", "onnx-int8"):
            ours = by[f"bento-{rt}"]
            ratios[f"bento-{rt}"] = {
                "vs": best.target,
                "throughput_ratio": round(ours.throughput_rps / best.throughput_rps, 2),
                "p99_ratio": round(ours.p99_ms / best.p99_ms, 2),
                "target_met": ours.throughput_rps >= 1.5 * best.throughput_rps and ours.p99_ms <= best.p99_ms,
            }
    report = {
        "what": "single-row /predict at fixed concurrency, one serving worker each, same MLP model",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {"rounds": args.rounds, "concurrency": args.concurrency, "duration_s": args.duration,
                     "warmup_s": args.warmup, "max_requests": args.max_requests, "load_generator": generator_name},
        "results": [asdict(r) for r in results],
        "rounds": [[asdict(r) for r in rnd] for rnd in rounds],
        "ratios_vs_mlserver": ratios,
        "target": "bento throughput >= 1.5x MLServer at equal or better p99",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(json.dumps(ratios, indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
