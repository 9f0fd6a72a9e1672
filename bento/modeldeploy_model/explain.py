"""SHAP attributions with an explainer that fits the model family.

Why per family: linear and tree models have exact, fast explainers (``LinearExplainer`` on the
scaled inputs, ``TreeExplainer`` using the tree structure); a neural network gets the
model-agnostic ``PermutationExplainer`` over a small training background, which needs only a
predict function - so the served model can explain through its ONNX session without importing
TensorFlow. Attributions are per original feature (a per-feature affine scaler does not mix
features), and ``base_value + sum(attributions) == prediction`` up to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modeldeploy_model import runtime


@dataclass
class Attributions:
    explainer: str
    feature_names: list[str]
    base_values: list[float]
    values: list[list[float]]
    predictions: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "explainer": self.explainer,
            "feature_names": self.feature_names,
            "base_values": self.base_values,
            "attributions": self.values,
            "predictions": self.predictions,
        }


class Explainer:
    """Wraps a SHAP explainer; build with :func:`for_model` or :func:`from_artifact`."""

    def __init__(self, kind: str, feature_names: list[str], background: np.ndarray, model: Any = None,
                 predict: Any = None) -> None:
        import shap

        self.feature_names = feature_names
        self.kind = kind
        self._transform: Any = None
        self._predict = predict
        if kind == "linear":
            scaler, est = model.steps[0][1], model.steps[-1][1]
            self._transform = scaler.transform
            self._shap: Any = shap.LinearExplainer(est, shap.maskers.Independent(scaler.transform(background)))
            self._predict = model.predict
        elif kind == "tree":
            scaler, est = model.steps[0][1], model.steps[-1][1]
            self._transform = scaler.transform
            self._shap = shap.TreeExplainer(est)
            self._predict = model.predict
        else:
            if predict is None:
                raise ValueError("the permutation explainer needs a predict function")
            masker = shap.maskers.Independent(background, max_samples=len(background))
            self._shap = shap.PermutationExplainer(predict, masker)

    @property
    def name(self) -> str:
        return {"linear": "shap.LinearExplainer", "tree": "shap.TreeExplainer"}.get(
            self.kind, "shap.PermutationExplainer")

    def explain(self, X: np.ndarray) -> Attributions:
        X = np.asarray(X, dtype=np.float64)
        if self.kind in ("linear", "tree"):
            exp = self._shap(self._transform(X))
        else:
            exp = self._shap(X, max_evals=max(2 * X.shape[1] + 1, 10 * X.shape[1]), silent=True)
        values = np.asarray(exp.values, dtype=np.float64).reshape(len(X), -1)
        base = np.asarray(exp.base_values, dtype=np.float64).reshape(-1)
        if base.size == 1:
            base = np.repeat(base, len(X))
        preds = np.asarray(self._predict(X), dtype=np.float64).reshape(-1)
        return Attributions(self.name, list(self.feature_names), base.tolist(), values.tolist(), preds.tolist())


def for_model(model: Any, family: str, feature_names: list[str], background: np.ndarray,
              predict: Any = None) -> Explainer:
    if family == "neural":
        return Explainer("permutation", feature_names, background, predict=predict)
    return Explainer(family, feature_names, background, model=model)


def from_artifact(artifact_dir: str | Path, predictor: runtime.Predictor | None = None) -> Explainer:
    """Build the explainer for a pipeline artifact (the neural path reuses ``predictor``)."""
    card = runtime.load_card(artifact_dir)
    background = np.load(Path(artifact_dir) / runtime.BACKGROUND_FILE)
    names = [f["name"] for f in card["features"]]
    family = str(card["family"])
    if family == "neural":
        pred = predictor or runtime.load_predictor(artifact_dir)
        return for_model(None, family, names, background, predict=pred.predict)
    import joblib

    model = joblib.load(Path(artifact_dir) / runtime.SKLEARN_FILE)
    return for_model(model, family, names, background)


def global_importance(att: Attributions) -> dict[str, float]:
    """Mean |SHAP| per feature, largest first: the card's summary of what drives the model."""
    vals = np.abs(np.asarray(att.values))
    means = vals.mean(axis=0) if vals.size else np.zeros(len(att.feature_names))
    pairs = sorted(zip(att.feature_names, means.tolist(), strict=True), key=lambda p: -p[1])
    return dict(pairs)
