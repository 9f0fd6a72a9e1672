"""Accelerate / compress: ONNX export, int8 dynamic quantization, parity and latency.

Why the parity check decides: an exported or quantized model is only a faster *copy* of the
model that passed the gate. We compare it with the original on the test split (maximum absolute
prediction difference and relative change of RMSE) and ship the fastest candidate that stays
within tolerance; a candidate that drifts is recorded with its numbers and dropped, never shipped.

Latency is measured in this process on single rows (what one HTTP request costs the model) and on
a batch of 256 rows (what adaptive batching feeds it under load); the choice uses single-row p50,
since that dominates serving latency at the concurrency we run.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modeldeploy_model import config, runtime
from modeldeploy_model.evaluate import regression_metrics
from modeldeploy_model.progress import SILENT, Bar, Progress, quiet_tensorflow, root_logging_at
from modeldeploy_model.train import TrainedModel

ONNX_OPSET = 17


@dataclass
class ParityResult:
    runtime: str
    max_abs_diff: float
    rmse_original: float
    rmse_candidate: float
    rmse_relative_delta: float
    tolerance_abs: float
    tolerance_rmse_relative: float
    passed: bool
    reason: str = ""


@dataclass
class LatencyResult:
    runtime: str
    row_p50_ms: float
    row_p99_ms: float
    batch256_p50_ms: float


@dataclass
class ExportResult:
    chosen_runtime: str
    candidates: list[str]
    parity: list[ParityResult] = field(default_factory=list)
    latency: list[LatencyResult] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    # Test-split predictions per runtime (the native model's too), kept for the report's parity
    # figure: a candidate that failed parity is deleted, its predictions are the only trace left.
    predictions: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen_runtime": self.chosen_runtime, "candidates": list(self.candidates),
                "parity": [asdict(p) for p in self.parity], "latency": [asdict(lat) for lat in self.latency],
                "errors": dict(self.errors)}


def export_sklearn_onnx(model: Any, n_features: int, path: Path) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(model, initial_types=[("rows", FloatTensorType([None, n_features]))],
                  target_opset={"": ONNX_OPSET, "ai.onnx.ml": 3})
    path.write_bytes(onx.SerializeToString())


def export_keras_onnx(model: Any, n_features: int, path: Path) -> None:
    quiet_tensorflow()
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # tf2onnx's from_keras does not understand Keras 3 models, and from_function leaves the
    # Normalization layer's statistics as graph inputs. Freezing the traced call into constants
    # gives a self-contained graph (normalisation and output rescaling included).
    spec = [tf.TensorSpec((None, n_features), tf.float32, name="rows")]
    fn = tf.function(lambda rows: model(rows, training=False), input_signature=spec)
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    proto, _ = tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(),
        input_names=[t.name for t in frozen.inputs],
        output_names=[t.name for t in frozen.outputs],
        opset=ONNX_OPSET,
    )
    path.write_bytes(proto.SerializeToString())


class NothingToQuantize(Exception):
    pass


def quantize_int8(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ops = {n.op_type for n in onnx.load(str(src)).graph.node}
    if not ops & {"MatMul", "Gemm", "Conv", "Attention", "LSTM", "GRU"}:
        raise NothingToQuantize(
            f"no int8-quantizable operators in this model (it uses {', '.join(sorted(ops))}); "
            "dynamic quantization applies to MatMul/Gemm, i.e. the mlp and keras kinds"
        )
    # onnxruntime logs a generic "consider pre-processing" hint on the root logger on every call.
    with root_logging_at(logging.ERROR):
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def parity(name: str, original: np.ndarray, candidate: np.ndarray, y_true: np.ndarray,
           max_abs: float, rmse_rel: float) -> ParityResult:
    diff = float(np.max(np.abs(original - candidate))) if original.size else 0.0
    r_orig = regression_metrics(y_true, original)["rmse"]
    r_cand = regression_metrics(y_true, candidate)["rmse"]
    rel = abs(r_cand - r_orig) / r_orig if r_orig > 0 else abs(r_cand - r_orig)
    reasons = []
    if not np.all(np.isfinite(candidate)):
        reasons.append("non-finite predictions")
    if diff > max_abs:
        reasons.append(f"max |prediction difference| {diff:.4g} > tolerance {max_abs:.4g}")
    if rel > rmse_rel:
        reasons.append(f"relative RMSE change {rel:.4g} > tolerance {rmse_rel:.4g}")
    return ParityResult(name, diff, r_orig, r_cand, rel, max_abs, rmse_rel, not reasons, "; ".join(reasons))


def measure_latency(name: str, predict: Callable[[np.ndarray], np.ndarray], X: np.ndarray,
                    rows: int = 200, batches: int = 20) -> LatencyResult:
    X = np.asarray(X, dtype=np.float32)
    big = np.resize(X, (256, X.shape[1]))
    for _ in range(5):
        predict(X[:1])  # warm up (lazy initialisation, caches)
    row_times = []
    for i in range(rows):
        x = X[i % len(X): i % len(X) + 1]
        t0 = time.perf_counter()
        predict(x)
        row_times.append((time.perf_counter() - t0) * 1000)
    batch_times = []
    for _ in range(batches):
        t0 = time.perf_counter()
        predict(big)
        batch_times.append((time.perf_counter() - t0) * 1000)
    row_times.sort()
    p99 = row_times[min(len(row_times) - 1, int(0.99 * len(row_times)))]
    return LatencyResult(name, statistics.median(row_times), p99, statistics.median(batch_times))


def _short(exc: Exception, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def export_candidates(model: TrainedModel, n_features: int, out_dir: Path, quantize: bool = True,
                      bar: Bar | None = None) -> dict[str, str]:
    """Write ONNX (and int8) files into ``out_dir``; return errors per candidate that failed."""
    errors: dict[str, str] = {}
    onnx_path = out_dir / runtime.ONNX_FILE
    try:
        if model.framework == "keras":
            export_keras_onnx(model.model, n_features, onnx_path)
        else:
            export_sklearn_onnx(model.model, n_features, onnx_path)
    except Exception as exc:  # converter gaps are reported, not fatal: the native model still ships
        errors["onnx"] = _short(exc)
        return errors
    finally:
        if bar is not None:
            bar.update(1, "onnx exported")
    if quantize:
        try:
            quantize_int8(onnx_path, out_dir / runtime.ONNX_INT8_FILE)
        except NothingToQuantize as exc:
            errors["onnx-int8"] = str(exc)
        except Exception as exc:
            errors["onnx-int8"] = _short(exc)
        if bar is not None:
            bar.update(1, "int8 quantized" if "onnx-int8" not in errors else "int8 skipped")
    return errors


def accelerate(model: TrainedModel, X_test: np.ndarray, y_test: np.ndarray, out_dir: Path, quantize: bool = True,
               tolerance_abs: float | None = None,
               tolerance_rmse_relative: float = config.PARITY_MAX_RMSE_RELATIVE_DELTA,
               progress: Progress = SILENT) -> ExportResult:
    """Export candidates next to the native model in ``out_dir``, check parity, time them, choose.

    Candidates that fail parity are deleted from ``out_dir`` so they can never be served.
    """
    native = model.framework
    if tolerance_abs is None:
        tolerance_abs = config.PARITY_MAX_ABS_FRACTION_OF_STD * float(np.std(y_test) or 1.0)
    # steps: onnx export, int8 quantization, then parity + latency per runtime (native, onnx, int8)
    with progress.bar(2 * (1 + int(quantize)) + 1, "export: step") as bar:
        errors = export_candidates(model, X_test.shape[1], out_dir, quantize=quantize, bar=bar)
        original = model.predict(X_test)
        result = ExportResult(chosen_runtime=native, candidates=[native], errors=errors,
                              predictions={native: original})
        result.latency.append(measure_latency(native, model.predict, X_test))
        bar.update(1, f"{native} timed")
        for rt in ("onnx", "onnx-int8")[: 1 + int(quantize)]:
            _check_candidate(rt, out_dir, X_test, y_test, tolerance_abs, tolerance_rmse_relative, result)
            bar.update(1, f"{rt} checked")
    passing = [lat for lat in result.latency if lat.runtime in result.candidates]
    result.chosen_runtime = min(passing, key=lambda lat: lat.row_p50_ms).runtime
    return result


def _check_candidate(rt: str, out_dir: Path, X_test: np.ndarray, y_test: np.ndarray, tolerance_abs: float,
                     tolerance_rmse_relative: float, result: ExportResult) -> None:
    """Parity of one exported runtime against the native predictions; time it if it passes, else delete it."""
    path = out_dir / runtime.RUNTIME_FILES[rt]
    if not path.exists():
        return
    pred = runtime.OnnxPredictor(path, runtime=rt)
    result.predictions[rt] = pred.predict(X_test)
    par = parity(rt, result.predictions[result.candidates[0]], result.predictions[rt], y_test, tolerance_abs,
                 tolerance_rmse_relative)
    result.parity.append(par)
    if not par.passed:
        path.unlink()
        return
    result.candidates.append(rt)
    result.latency.append(measure_latency(rt, pred.predict, X_test))


def copy_tree(src: Path, dst: Path) -> None:
    """Replace ``dst`` with a copy of ``src`` atomically enough for a single writer."""
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dst.parent))
    shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
