"""Metrics, model selection and the quality gate.

Why select on validation and gate on test: the validation split picks the winner, so its score is
optimistically biased; the untouched test split is what the gate judges. A model that misses a
threshold is not packaged, and the message names metric, value and threshold so the person who
reads a failed CI log knows exactly what to fix.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ("mse", "rmse", "mae", "r2")
# For selection: lower is better for errors, higher for r2.
HIGHER_IS_BETTER = {"mse": False, "rmse": False, "mae": False, "r2": True}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"shape mismatch: y_true {y_true.shape} vs y_pred {y_pred.shape}")
    err = y_pred - y_true
    mse = float(np.mean(err**2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    r2 = 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else 0.0
    return {"mse": mse, "rmse": math.sqrt(mse), "mae": float(np.mean(np.abs(err))), "r2": r2}


@dataclass(frozen=True)
class Threshold:
    metric: str
    op: str  # ">=", ">", "<=" or "<": strict as written
    value: float

    def passes(self, observed: float) -> bool:
        if math.isnan(observed):
            return False
        return bool(_OPS[self.op](observed, self.value))

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


_RULE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(>=|<=|=>|=<|>|<)\s*(\S+)\s*$")
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_SPELLINGS = {"=>": ">=", "=<": "<="}
_SYNTAX = (f"write METRIC>=VALUE, METRIC>VALUE, METRIC<=VALUE or METRIC<VALUE with METRIC one of {', '.join(METRICS)} "
           "(e.g. --gate 'r2>0.8' --gate 'rmse<=15')")


def parse_threshold(text: str) -> Threshold:
    """Parse ``"r2>=0.8"``, ``"r2>0.8"``, ``"rmse<=12"``, ``"rmse<12"``: ``>`` and ``<`` are strict."""
    m = _RULE.match(text)
    if not m:
        raise ValueError(f"cannot read gate threshold {text!r}: {_SYNTAX}")
    metric, op, raw = m.group(1), m.group(2), m.group(3)
    if metric not in METRICS:
        raise ValueError(f"gate threshold {text!r}: unknown metric {metric!r}; {_SYNTAX}")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"gate threshold {text!r}: {raw!r} is not a number; {_SYNTAX}") from None
    if not math.isfinite(value):
        raise ValueError(f"gate threshold {text!r}: the value must be a finite number; {_SYNTAX}")
    return Threshold(metric, _SPELLINGS.get(op, op), value)


def load_gate_file(path: Path) -> list[Threshold]:
    """Read thresholds from YAML or JSON: ``{r2: {min: 0.8}, rmse: {max: 15}}``."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"gate config {path} not found") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"gate config {path} is not valid YAML/JSON: {exc}") from None
    if isinstance(raw, dict) and "gate" in raw:
        raw = raw["gate"]
    if not isinstance(raw, dict):
        raise ValueError(f"gate config {path} must map metric names to {{min: ...}} / {{max: ...}}")
    out: list[Threshold] = []
    for metric, bounds in raw.items():
        if metric not in METRICS or not isinstance(bounds, dict) or not set(bounds) <= {"min", "max"} or not bounds:
            raise ValueError(
                f"gate config {path}: entry {metric!r}: expected one of {', '.join(METRICS)} "
                "with {min: NUMBER} and/or {max: NUMBER}"
            )
        if "min" in bounds:
            out.append(Threshold(metric, ">=", float(bounds["min"])))
        if "max" in bounds:
            out.append(Threshold(metric, "<=", float(bounds["max"])))
    return out


@dataclass
class GateCheck:
    metric: str
    op: str
    threshold: float
    value: float
    passed: bool

    def message(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return f"{self.metric} = {self.value:.4g} on the test split, threshold {self.op} {self.threshold:g}: {verdict}"


@dataclass
class GateResult:
    passed: bool
    split: str = "test"
    checks: list[GateCheck] = field(default_factory=list)

    def failures(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        if not self.checks:
            return "quality gate: no thresholds given (pass --gate METRIC>=VALUE to enforce some)"
        if self.passed:
            return "quality gate passed: " + "; ".join(c.message() for c in self.checks)
        return "quality gate failed: " + "; ".join(c.message() for c in self.failures())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_gate(metrics: dict[str, float], thresholds: list[Threshold]) -> GateResult:
    checks = [GateCheck(t.metric, t.op, t.value, float(metrics[t.metric]), t.passes(float(metrics[t.metric])))
              for t in thresholds]
    return GateResult(passed=all(c.passed for c in checks), checks=checks)


class GateFailed(Exception):
    """The selected model misses a quality threshold; it must not be packaged."""

    def __init__(self, result: GateResult) -> None:
        super().__init__(result.summary())
        self.result = result


def select_best(scores: dict[str, dict[str, dict[str, float]]], metric: str = "rmse") -> str:
    """Pick the model kind with the best validation ``metric``. ``scores[kind]["val"][metric]``."""
    if not scores:
        raise ValueError("no trained models to select from")
    sign = -1.0 if HIGHER_IS_BETTER[metric] else 1.0
    return min(sorted(scores), key=lambda k: sign * scores[k]["val"][metric])
