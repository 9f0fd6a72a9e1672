"""The TensorFlow/Keras path: train, export through tf2onnx at parity, explain, serve the runtime."""

import numpy as np
import pytest

from modeldeploy_model import runtime
from modeldeploy_model.explain import from_artifact
from modeldeploy_model.pipeline import stage_data, stage_evaluate, stage_explain, stage_export, stage_train
from modeldeploy_model.train import TrainedModel, TrainOptions


@pytest.fixture(scope="module")
def keras_work(tmp_path_factory):
    work = tmp_path_factory.mktemp("keras")
    stage_data(work, n_samples=500, seed=7)
    stage_train(work, ("keras",), TrainOptions(seed=7, epochs=25))
    stage_evaluate(work)
    stage_export(work, quantize=True)
    return work


def test_keras_learns_room_prices(keras_work):
    import json

    ev = json.loads((keras_work / "results" / "evaluate.json").read_text())
    assert ev["selected"] == "keras"
    assert ev["scores"]["keras"]["test"]["r2"] > 0.8


def test_keras_onnx_export_at_parity(keras_work):
    card = runtime.load_card(keras_work / "artifact")
    assert card["framework"] == "keras" and card["family"] == "neural"
    onnx = next(p for p in card["export"]["parity"] if p["runtime"] == "onnx")
    assert onnx["passed"] and onnx["max_abs_diff"] < 1e-2
    assert "int8" in " ".join(p["runtime"] for p in card["export"]["parity"])  # quantization was tried
    native = runtime.load_predictor(keras_work / "artifact", "keras")
    exported = runtime.load_predictor(keras_work / "artifact", "onnx")
    x = np.array([[50.0, 3.0, 1.0], [120.0, 20.0, 2.0]])
    assert np.allclose(native.predict(x), exported.predict(x), atol=1e-2)


def test_keras_model_carries_its_preprocessing(keras_work):
    model = TrainedModel.load(keras_work / "models" / "keras").model
    assert model.get_layer("normalize") is not None
    # raw (unscaled) inputs give prices on the target's scale: the scaling is inside the model
    assert 50 < float(np.asarray(model(np.array([[60.0, 5.0, 1.0]], dtype=np.float32)))[0, 0]) < 500


def test_keras_explained_with_permutation_shap(keras_work):
    res = stage_explain(keras_work, rows=10)
    assert res.explainer == "shap.PermutationExplainer"
    assert res.max_additivity_error < 1e-3
    att = from_artifact(keras_work / "artifact").explain(np.array([[60.0, 5.0, 1.0]]))
    assert len(att.values[0]) == 3
