"""Load a pipeline artifact and predict with it, importing only what that artifact needs.

Why a separate, import-light module: the served model must start fast (tests start several
servers, and Kubernetes probes wait for them). An ONNX artifact needs only onnxruntime; a
scikit-learn one only scikit-learn; TensorFlow (seconds to import) is loaded only when the
artifact's serving runtime is the Keras model itself.

Artifact layout (a directory, written by :mod:`modeldeploy_model.export`)::

    card.json         the model card: features, metrics, parity, versions, chosen runtime
    model.joblib      the scikit-learn Pipeline (preprocessing + estimator), or
    model.keras       the Keras model (normalisation layer inside)
    model.onnx        optional ONNX export
    model.int8.onnx   optional int8 dynamically quantized ONNX export
    background.npy    up to 100 training rows, the SHAP background / masker data
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

CARD_FILE = "card.json"
SKLEARN_FILE = "model.joblib"
KERAS_FILE = "model.keras"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
BACKGROUND_FILE = "background.npy"

RUNTIME_FILES = {
    "sklearn": SKLEARN_FILE,
    "keras": KERAS_FILE,
    "onnx": ONNX_FILE,
    "onnx-int8": ONNX_INT8_FILE,
}


class ArtifactError(Exception):
    """An artifact directory is missing or incomplete; the message says what to run."""


class Predictor(Protocol):
    runtime: str

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict a 2-d float array of rows; returns a 1-d float64 array."""
        ...


def load_card(artifact_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(artifact_dir) / CARD_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{path} not found: {artifact_dir} is not a modeldeploy artifact. "
            "Create one with `modeldeploy pipeline --workdir DIR` (artifact in DIR/artifact) "
            "or `modeldeploy demo-artifact --out DIR`."
        )
    card: dict[str, Any] = json.loads(path.read_text())
    return card


class SklearnPredictor:
    runtime = "sklearn"

    def __init__(self, path: Path) -> None:
        import joblib

        self.model = joblib.load(path)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(np.asarray(X, dtype=np.float64)), dtype=np.float64).reshape(-1)


class KerasPredictor:
    runtime = "keras"

    def __init__(self, path: Path) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        self.model = keras.models.load_model(path)

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = self.model(np.asarray(X, dtype=np.float32), training=False)
        return np.asarray(out, dtype=np.float64).reshape(-1)


class OnnxPredictor:
    def __init__(self, path: Path, runtime: str = "onnx", threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # One thread per session: a served worker is one process per core, and in-op threads
        # only fight each other for the same cores at these model sizes.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.input_dtype = np.float64 if first.type == "tensor(double)" else np.float32
        self.runtime = runtime

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input_name: np.asarray(X, dtype=self.input_dtype)})[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)


def load_predictor(artifact_dir: str | os.PathLike[str], runtime: str | None = None) -> Predictor:
    """Load the runtime named in the card (or ``runtime``) from ``artifact_dir``."""
    card = load_card(artifact_dir)
    chosen = runtime or str(card.get("runtime", "sklearn"))
    if chosen not in RUNTIME_FILES:
        raise ArtifactError(f"unknown runtime {chosen!r}: choose one of {', '.join(RUNTIME_FILES)}")
    path = Path(artifact_dir) / RUNTIME_FILES[chosen]
    if not path.exists():
        raise ArtifactError(f"{path} not found: this artifact has no {chosen} runtime; re-run `modeldeploy export`")
    if chosen == "sklearn":
        return SklearnPredictor(path)
    if chosen == "keras":
        return KerasPredictor(path)
    return OnnxPredictor(path, runtime=chosen)


def check_artifact(artifact_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Fail with ArtifactError unless the directory holds a card with features and its serving model.

    Launchers call this before starting a server: a worker that fails to load its model is
    restarted by BentoML's supervisor in a loop instead of exiting with the reason.
    """
    card = load_card(artifact_dir)
    features = card.get("features")
    if not isinstance(features, list) or not features or not all("name" in f for f in features):
        raise ArtifactError(f"{Path(artifact_dir) / CARD_FILE} lists no features: rebuild it with `modeldeploy export`")
    chosen = str(card.get("runtime", "sklearn"))
    if chosen not in RUNTIME_FILES or not (Path(artifact_dir) / RUNTIME_FILES[chosen]).exists():
        raise ArtifactError(f"{artifact_dir}: the card's runtime {chosen!r} has no model file; "
                            "rebuild it with `modeldeploy export`")
    return card


def available_runtimes(artifact_dir: str | os.PathLike[str]) -> list[str]:
    return [rt for rt, name in RUNTIME_FILES.items() if (Path(artifact_dir) / name).exists()]
