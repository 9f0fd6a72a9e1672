"""The whole pipeline end to end on small data, and what each stage recorded."""

import json
from pathlib import Path

import numpy as np
import pytest

from modeldeploy_model import runtime
from modeldeploy_model.evaluate import GateFailed, parse_threshold
from modeldeploy_model.pipeline import (
    StageError,
    load_split,
    stage_data,
    stage_evaluate,
    stage_export,
    stage_train,
)
from modeldeploy_model.train import TrainedModel


def test_every_stage_recorded(pipeline_run):
    results = pipeline_run.artifact_dir.parent / "results"
    for stage in ("data", "train", "evaluate", "export", "explain", "package"):
        assert json.loads((results / f"{stage}.json").read_text())


def test_selection_is_by_validation_and_gate_on_test(pipeline_run):
    ev = pipeline_run.evaluate
    assert set(ev.scores) == {"ridge", "forest", "mlp"}
    best = min(ev.scores, key=lambda k: ev.scores[k]["val"]["rmse"])
    assert ev.selected == best
    assert ev.gate.passed and {c.metric for c in ev.gate.checks} == {"r2", "rmse"}
    assert all(c.value == ev.scores[best]["test"][c.metric] for c in ev.gate.checks)


def test_card_carries_evaluation_data_hash_parity_versions(pipeline_run):
    card = runtime.load_card(pipeline_run.artifact_dir)
    assert card["data_hash"] == pipeline_run.data.data_hash and card["data_hash"].startswith("sha256:")
    assert card["evaluation"]["metrics"]["test"]["r2"] > 0.9
    assert card["gate"]["passed"] is True
    assert card["runtime"] in card["runtimes"]
    assert {"numpy", "scikit-learn", "onnxruntime", "bentoml", "python"} <= set(card["versions"])
    assert card["explain"]["explainer"].startswith("shap.")
    for p in card["export"]["parity"]:
        assert {"max_abs_diff", "rmse_relative_delta", "passed"} <= set(p)


def test_preprocessing_fitted_on_training_split_only(pipeline_run):
    sp = load_split(pipeline_run.artifact_dir.parent)
    model = TrainedModel.load(pipeline_run.artifact_dir.parent / "models" / "ridge").model
    scaler = model.steps[0][1]
    assert np.allclose(scaler.mean_, sp.X_train.mean(axis=0))
    assert not np.allclose(scaler.mean_, np.vstack([sp.X_train, sp.X_val, sp.X_test]).mean(axis=0))


def test_served_runtime_is_fastest_passing_candidate(pipeline_run):
    ex = pipeline_run.export
    passing = {p.runtime for p in ex.parity if p.passed}
    lat = {lt.runtime: lt.row_p50_ms for lt in ex.latency if lt.runtime in ex.candidates}
    assert set(ex.candidates) - {"sklearn", "keras"} == passing
    assert ex.chosen_runtime == min(lat, key=lambda k: lat[k])
    pred = runtime.load_predictor(pipeline_run.artifact_dir)
    sp = load_split(pipeline_run.artifact_dir.parent)
    assert pred.predict(sp.X_test[:5]).shape == (5,)


def test_explanations_are_additive(pipeline_run):
    assert pipeline_run.explain.max_additivity_error < 1e-3 * 100
    imp = pipeline_run.explain.importance
    assert next(iter(imp)) == "area"  # area dominates room prices by construction


def test_packaged_bento_carries_the_card(pipeline_run):
    import bentoml

    pk = pipeline_run.package
    bento = bentoml.get(pk.bento_tag)
    card = runtime.load_card(pipeline_run.artifact_dir)
    labels = bento.info.labels
    assert labels["model_version"] == card["version"]
    assert labels["data_hash"] == card["data_hash"]
    assert labels["gate"] == "passed"
    assert "parity" in labels and labels["version_bentoml"] == card["versions"]["bentoml"]
    readme = (Path(bento.path) / "README.md").read_text()  # the description: the whole card as JSON
    assert json.dumps(card["evaluation"]["metrics"]["test"]["rmse"]) in readme
    model = bentoml.models.get(pk.model_tag)
    assert json.loads(model.info.metadata["card_json"])["version"] == card["version"]
    assert (model.path_of("card.json"))


def test_failed_gate_is_not_exported(tmp_path):
    stage_data(tmp_path, n_samples=200, seed=0)
    stage_train(tmp_path, ("ridge",))
    with pytest.raises(GateFailed) as info:
        stage_evaluate(tmp_path, [parse_threshold("r2>=0.9999")])
    assert "r2 =" in str(info.value) and ">= 0.9999" in str(info.value)
    with pytest.raises(StageError, match="quality gate"):
        stage_export(tmp_path)
    assert not (tmp_path / "artifact").exists()


def test_stage_out_of_order_says_what_to_run(tmp_path):
    with pytest.raises(StageError, match="modeldeploy evaluate"):
        stage_export(tmp_path)
