"""`modeldeploy status` renders a rollout readably from the object alone."""

from __future__ import annotations

from modeldeploy.cli import build_parser
from modeldeploy.cli_operator import render_status

OBJ = {
    "metadata": {"name": "price", "namespace": "ml"},
    "spec": {"rollout": {"strategy": "Canary", "canary": {"steps": [10, 25, 50], "interval": "30s"}}},
    "status": {
        "phase": "Progressing", "message": "canary def at step 2/3 (25%)", "readyReplicas": 4, "replicas": 4,
        "stable": {"image": "r/p:v1", "bento": "price:v1", "hash": "abc"},
        "canary": {"image": "r/p:v2", "bento": "price:v2", "hash": "def"},
        "currentStep": 2, "canaryWeight": 20, "failedChecks": 0,
        "lastAnalysis": [{"time": "2026-11-26T12:00:30Z", "metric": "error-rate", "value": 0.002, "max": 0.01,
                          "verdict": "Pass", "message": "error-rate = 0.002 within <= 0.01"}],
        "history": [{"time": "2026-11-25T09:00:00Z", "revision": {"image": "r/p:v0", "bento": "price:v0"},
                     "result": "Superseded", "reason": "promoted abc"}],
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


def test_status_of_a_fresh_object_does_not_crash() -> None:
    out = render_status({"metadata": {"name": "x"}, "spec": {}})
    assert "Phase:     Pending" in out and "Traffic:   stable 100%  canary 0%" in out


def test_parser_knows_the_rollout_commands() -> None:
    p = build_parser()
    for cmd in ("status", "promote", "abort", "pause", "resume"):
        args = p.parse_args([cmd, "price", "-n", "ml"])
        assert args.name == "price" and args.namespace == "ml" and callable(args.func)
