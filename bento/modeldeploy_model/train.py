"""Training: scikit-learn models and a small Keras network, preprocessing fitted on train only.

Why preprocessing lives inside the saved model: serving must apply exactly the transformation
the model was trained with. For scikit-learn it is the first step of a ``Pipeline``; for Keras a
``Normalization`` layer adapted on the training split (and a ``Rescaling`` of the output to the
target's scale), so the ONNX export carries it too and no separate scaler has to be shipped.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modeldeploy_model.data import Split
from modeldeploy_model.progress import SILENT, Progress, quiet_tensorflow

SKLEARN_KINDS = ("linear", "ridge", "forest", "gbt", "mlp")
KINDS = (*SKLEARN_KINDS, "keras")
# The family picks the SHAP explainer; the framework picks how the model is saved and exported.
FAMILY = {"linear": "linear", "ridge": "linear", "forest": "tree", "gbt": "tree", "mlp": "neural", "keras": "neural"}


@dataclass
class TrainedModel:
    """A fitted model plus what we need to know about it later."""

    kind: str
    family: str
    model: Any  # sklearn Pipeline or keras.Model
    train_seconds: float
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def framework(self) -> str:
        return "keras" if self.kind == "keras" else "sklearn"

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.framework == "keras":
            out = self.model(np.asarray(X, dtype=np.float32), training=False)
            return np.asarray(out, dtype=np.float64).reshape(-1)
        return np.asarray(self.model.predict(np.asarray(X, dtype=np.float64)), dtype=np.float64).reshape(-1)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if self.framework == "keras":
            self.model.save(directory / "model.keras")
        else:
            import joblib

            joblib.dump(self.model, directory / "model.joblib")
        info = {"kind": self.kind, "family": self.family, "train_seconds": self.train_seconds,
                "params": self.params}
        (directory / "info.json").write_text(json.dumps(info, indent=2))

    @classmethod
    def load(cls, directory: Path) -> TrainedModel:
        info = json.loads((directory / "info.json").read_text())
        if info["kind"] == "keras":
            quiet_tensorflow()
            import keras

            model = keras.models.load_model(directory / "model.keras")
        else:
            import joblib

            model = joblib.load(directory / "model.joblib")
        return cls(info["kind"], info["family"], model, float(info["train_seconds"]), dict(info["params"]))


@dataclass(frozen=True)
class TrainOptions:
    seed: int = 42
    epochs: int = 60          # Keras only
    n_estimators: int = 60    # forest only
    max_iter: int = 150       # gbt only
    mlp_max_iter: int = 300   # mlp only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sklearn_estimator(kind: str, opts: TrainOptions) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import LinearRegression, Ridge

    if kind == "linear":
        return LinearRegression()
    if kind == "ridge":
        return Ridge(alpha=1.0)
    if kind == "forest":
        return RandomForestRegressor(n_estimators=opts.n_estimators, max_depth=12, min_samples_leaf=2,
                                     random_state=opts.seed, n_jobs=1)
    if kind == "mlp":
        from sklearn.neural_network import MLPRegressor

        # A small network in scikit-learn: its ONNX graph is plain MatMul/Add/Relu, so unlike the
        # linear and tree converters' ai.onnx.ml operators it can be int8-quantized.
        return MLPRegressor(hidden_layer_sizes=(32, 16), max_iter=opts.mlp_max_iter, early_stopping=True,
                            random_state=opts.seed, learning_rate_init=0.01)
    if kind == "gbt":
        return HistGradientBoostingRegressor(max_iter=opts.max_iter, learning_rate=0.1, random_state=opts.seed)
    raise ValueError(f"unknown model kind {kind!r}: choose from {', '.join(KINDS)}")


# Estimators that can grow in steps with ``warm_start`` and end up exactly as one ``fit`` would
# (a forest draws each tree's seed from random_state in order; boosting adds iterations): the
# attribute that counts the steps. Only these get a bar with real progress.
_STEPPED = {"forest": ("n_estimators", "trees"), "gbt": ("max_iter", "iterations")}


def _fit_stepped(pipe: Any, kind: str, split: Split, progress: Progress, steps: int = 10) -> None:
    """Fit ``pipe`` in about ``steps`` chunks of trees/iterations, advancing a bar after each."""
    attr, unit = _STEPPED[kind]
    est = pipe.steps[-1][1]
    total = int(getattr(est, attr))
    X = pipe.steps[0][1].fit_transform(split.X_train, split.y_train)
    est.set_params(warm_start=True)
    with progress.bar(total, f"train {kind}: {unit}") as bar:
        done = 0
        while done < total:
            step = min(total, done + max(1, total // steps))
            est.set_params(**{attr: step})
            est.fit(X, split.y_train)
            bar.update(step - done)
            done = step
    est.set_params(warm_start=False)


def train_sklearn(kind: str, split: Split, opts: TrainOptions, progress: Progress = SILENT) -> TrainedModel:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    est = _sklearn_estimator(kind, opts)
    # Trees need no scaling, and a float64 scaler in front of them breaks ONNX parity: scikit-learn
    # compares float32 inputs with float32 thresholds, so a row scaled in float64 vs float32 can take
    # the other branch near a threshold and jump a whole leaf value. An identity step keeps the
    # pipeline's shape (preprocessing, estimator) for every kind.
    scale = FunctionTransformer() if FAMILY[kind] == "tree" else StandardScaler()
    pipe = Pipeline([("scale", scale), ("model", est)])
    t0 = time.perf_counter()
    if progress.enabled and kind in _STEPPED:
        _fit_stepped(pipe, kind, split, progress)
    else:
        pipe.fit(split.X_train, split.y_train)  # scaler statistics come from the training split only
    params = {k: v for k, v in est.get_params().items() if isinstance(v, int | float | str | bool) or v is None}
    return TrainedModel(kind, FAMILY[kind], pipe, time.perf_counter() - t0, params)


def _epoch_callback(keras: Any, bar: Any) -> Any:
    class EpochBar(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs or {}
            bar.update(1, ", ".join(f"{k} {v:.4g}" for k, v in logs.items() if k in ("loss", "val_loss")))

    return EpochBar()


def train_keras(split: Split, opts: TrainOptions, progress: Progress = SILENT) -> TrainedModel:
    quiet_tensorflow()
    import keras

    keras.utils.set_random_seed(opts.seed)
    x_train = split.X_train.astype(np.float32)
    y_mean, y_std = float(split.y_train.mean()), float(split.y_train.std() or 1.0)
    norm = keras.layers.Normalization(name="normalize")
    norm.adapt(x_train)  # statistics from the training split only
    model = keras.Sequential(
        [
            keras.Input(shape=(split.n_features,), name="rows"),
            norm,
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1),
            keras.layers.Rescaling(scale=y_std, offset=y_mean, name="to_target_scale"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="mse")
    t0 = time.perf_counter()
    early = keras.callbacks.EarlyStopping(patience=10, restore_best_weights=True)
    with progress.bar(opts.epochs, "train keras: epoch") as bar:
        model.fit(
            x_train, split.y_train.astype(np.float32),
            validation_data=(split.X_val.astype(np.float32), split.y_val.astype(np.float32)),
            epochs=opts.epochs, batch_size=32, verbose=0, callbacks=[early, _epoch_callback(keras, bar)],
        )
        if bar.done < bar.total:
            progress.line(f"train keras: stopped early after {bar.done} of {bar.total} epochs")
    params = {"epochs": opts.epochs, "layers": "32-16-1", "optimizer": "adam", "learning_rate": 0.01}
    return TrainedModel("keras", "neural", model, time.perf_counter() - t0, params)


def train_model(kind: str, split: Split, opts: TrainOptions | None = None,
                progress: Progress = SILENT) -> TrainedModel:
    opts = opts or TrainOptions()
    if kind == "keras":
        return train_keras(split, opts, progress)
    if kind not in SKLEARN_KINDS:
        raise ValueError(f"unknown model kind {kind!r}: choose from {', '.join(KINDS)}")
    return train_sklearn(kind, split, opts, progress)


def parse_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown model kind(s) {', '.join(bad) or '(none)'}: choose from {', '.join(KINDS)}")
    return kinds
