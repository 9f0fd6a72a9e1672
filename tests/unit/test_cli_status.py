"""`modeldeploy status` renders a rollout readably from the object alone, in kubectl's output formats."""

from __future__ import annotations

import json

import pytest
import yaml

from modeldeploy import exitcodes
from modeldeploy.cli import build_parser
from modeldeploy.cli_operator import finished, render, render_status, watch_line

OBJ = {
    "metadata": {"name": "price", "namespace": "ml", "generation": 3},
    "spec": {"rollout": {"strategy": "Canary", "canary": {"steps": [10, 25, 50], "interval": "30s"}}},
    "status": {
        "phase": "Progressing", "message": "canary def at step 2/3 (25%)", "readyReplicas": 4, "replicas": 4,
        "observedGeneration": 3,
        "stable": {"image": "r/p:v1", "bento": "price:v1", "hash": "abc"},
        "canary": {"image": "r/p:v2", "bento": "price:v2", "hash": "def"},
        "currentStep": 2, "canaryWeight": 20, "failedChecks": 0,
        "lastAnalysis": [{"time": "2026-11-26T12:00:30Z", "metric": "error-rate", "value": 0.002, "max": 0.01,
                          "verdict": "Pass", "message": "error-rate = 0.002 within <= 0.01"}],
        "history": [{"time": "2026-11-25T09:00:00Z", "revision": {"image": "r/p:v0", "bento": "price:v0"},
                     "result": "Superseded", "reason": "promoted abc"}],
        "timeline": [{"step": 1, "weight": 0, "verdict": "Started", "time": "2026-11-26T12:00:00Z"},
                     {"step": 1, "weight": 20, "verdict": "Pass", "time": "2026-11-26T12:00:30Z"}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "Serving", "message": "4/4 ready"}],
    },
}


def test_status_table_shows_phase_step_weights_and_analyses() -> None:
    out = render_status(OBJ)
    assert "ModelDeployment ml/price" in out
    assert "Phase:     Progressing" in out
    assert "Canary:    price:v2  (def)  step 2/3  target 25%" in out
    assert "Traffic:   stable 80%  canary 20%" in out
    row = next(line for line in out.splitlines() if "error-rate" in line and "Pass" in line)
    assert "0.002" in row and "0.01" in row
    assert "price:v0" in out and "Superseded" in out


def test_status_shows_the_timeline_of_weight_and_verdict_per_step() -> None:
    lines = render_status(OBJ).splitlines()
    start = lines.index("  Timeline:")
    assert lines[start + 2].split() == ["2026-11-26T12:00:00Z", "1/3", "10%", "..........", "0%", "Started"]
    assert lines[start + 3].split() == ["2026-11-26T12:00:30Z", "1/3", "10%", "##........", "20%", "Pass"]


def test_status_of_a_fresh_object_does_not_crash() -> None:
    out = render_status({"metadata": {"name": "x"}, "spec": {}})
    assert "Phase:     Pending" in out and "Traffic:   stable 100%  canary 0%" in out
    assert "Timeline" not in out


def test_output_formats_json_yaml_wide() -> None:
    assert json.loads(render(OBJ, "json")) == OBJ
    assert yaml.safe_load(render(OBJ, "yaml")) == OBJ
    wide = render(OBJ, "wide")
    assert "ModelDeployment ml/price" in wide and "Timeline:" in wide
    assert "  Conditions:" in wide and "Serving" in wide and "4/4 ready" in wide
    assert "Conditions:" not in render(OBJ, None)


def test_wide_shows_every_analysis_the_default_the_latest_ten() -> None:
    many = json.loads(json.dumps(OBJ))
    many["status"]["lastAnalysis"] = [dict(OBJ["status"]["lastAnalysis"][0], message=f"m{i}") for i in range(14)]
    assert "m13" in render(many, "wide") and "m13" not in render(many, None) and "m9" in render(many, None)


@pytest.mark.parametrize(("phase", "code"), [
    ("Healthy", 0), ("Progressing", 0), ("Paused", 0), ("Pending", 0), (None, 0),
    ("RolledBack", 4), ("Degraded", 5), ("Failed", 6),
])
def test_exit_code_per_phase(phase: str | None, code: int) -> None:
    assert exitcodes.for_phase(phase) == code


def test_a_watch_ends_on_a_final_phase_only_once_the_operator_saw_the_current_spec() -> None:
    assert not finished(OBJ)  # Progressing
    healthy = json.loads(json.dumps(OBJ))
    healthy["status"]["phase"] = "Healthy"
    assert finished(healthy)
    healthy["metadata"]["generation"] = 4  # a new spec the operator has not acted on yet
    assert not finished(healthy)
    line = watch_line(OBJ)
    assert "Progressing" in line and "step 2/3" in line and "canary 20%" in line and "last Pass" in line


def test_parser_knows_the_rollout_commands() -> None:
    p = build_parser()
    for cmd in ("status", "promote", "abort", "pause", "resume"):
        args = p.parse_args([cmd, "price", "-n", "ml", "--kubeconfig", "/k", "--context", "c"])
        assert args.name == "price" and args.namespace == "ml" and callable(args.func)
        assert (args.kubeconfig, args.context) == ("/k", "c")


def test_status_shows_an_approximate_step_condition_without_wide() -> None:
    obj = json.loads(json.dumps(OBJ))
    obj["status"]["conditions"].append({"type": "StepsApproximate", "status": "True", "reason": "WholePods",
                                        "message": "step 10% gets 50%"})
    assert "  StepsApproximate:  WholePods: step 10% gets 50%" in render_status(obj)
    obj["status"]["conditions"][-1]["status"] = "False"
    assert "StepsApproximate:" not in render_status(obj)
