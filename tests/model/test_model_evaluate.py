import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from modeldeploy_model.evaluate import (
    apply_gate,
    load_gate_file,
    parse_threshold,
    regression_metrics,
    select_best,
)


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y, p = rng.normal(size=50), rng.normal(size=50)
    m = regression_metrics(y, p)
    assert m["mse"] == pytest.approx(mean_squared_error(y, p))
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, p)))
    assert m["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert m["r2"] == pytest.approx(r2_score(y, p))


@pytest.mark.parametrize(("text", "metric", "op", "value"), [
    ("r2>=0.8", "r2", ">=", 0.8), ("rmse <= 12.5", "rmse", "<=", 12.5), ("mae<3", "mae", "<", 3.0),
    ("mse>1e-3", "mse", ">", 1e-3), ("r2=>0.5", "r2", ">=", 0.5), ("mae=<2", "mae", "<=", 2.0),
])
def test_parse_threshold(text, metric, op, value):
    t = parse_threshold(text)
    assert (t.metric, t.op, t.value) == (metric, op, value)


@pytest.mark.parametrize(("text", "observed", "passes"), [
    ("r2>0.9", 0.9, False), ("r2>=0.9", 0.9, True), ("r2>0.9", 0.91, True),
    ("rmse<15", 15.0, False), ("rmse<=15", 15.0, True), ("rmse<15", 14.9, True),
])
def test_strict_operators_are_strict(text, observed, passes):
    t = parse_threshold(text)
    assert t.passes(observed) is passes
    assert str(t) == text.replace(t.op, f" {t.op} ")


@pytest.mark.parametrize(("text", "why"), [
    ("accuracy>=0.9", "unknown metric 'accuracy'"), ("r2 == 0.9", "cannot read"),
    ("r2>=high", "'high' is not a number"), ("", "cannot read"), ("r2>nan", "finite"), ("r2>>0.9", "is not a number"),
])
def test_bad_threshold_explains_the_syntax(text, why):
    with pytest.raises(ValueError, match="METRIC>=VALUE, METRIC>VALUE, METRIC<=VALUE or METRIC<VALUE") as e:
        parse_threshold(text)
    assert why in str(e.value)


def test_gate_file(tmp_path):
    f = tmp_path / "gate.yaml"
    f.write_text("gate:\n  r2: {min: 0.9}\n  rmse: {max: 15}\n")
    ts = load_gate_file(f)
    assert [(t.metric, t.op, t.value) for t in ts] == [("r2", ">=", 0.9), ("rmse", "<=", 15.0)]
    f.write_text("accuracy: {min: 1}\n")
    with pytest.raises(ValueError, match="accuracy"):
        load_gate_file(f)


def test_failing_gate_names_metric_value_and_threshold():
    res = apply_gate({"r2": 0.5, "rmse": 10.0, "mae": 1, "mse": 100}, [parse_threshold("r2>=0.8"),
                                                                         parse_threshold("rmse<=20")])
    assert not res.passed
    assert [c.metric for c in res.failures()] == ["r2"]
    msg = res.summary()
    assert "r2 = 0.5" in msg and ">= 0.8" in msg and "FAILED" in msg and "rmse" not in msg


def test_nan_metric_never_passes():
    assert not apply_gate({"r2": float("nan")}, [parse_threshold("r2>=0")]).passed


def test_select_best_by_validation():
    scores = {"a": {"val": {"rmse": 3.0, "r2": 0.5}}, "b": {"val": {"rmse": 2.0, "r2": 0.4}}}
    assert select_best(scores, "rmse") == "b"
    assert select_best(scores, "r2") == "a"
