"""Fault-injection settings, parsed in one place.

Why separate: the served worker applies them (service.py), and the launchers (``modeldeploy
serve``, ``testing.serve_subprocess``) check them *before* starting a server - a bad value would
otherwise crash the BentoML worker in a restart loop instead of failing once with a clear message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modeldeploy_model import config


@dataclass(frozen=True)
class FaultSettings:
    error_rate: float = 0.0  # fraction of /predict calls answered with HTTP 500
    latency_ms: float = 0.0  # added to every /predict call

    @property
    def active(self) -> bool:
        return self.error_rate > 0 or self.latency_ms > 0


def _read(environ: Mapping[str, str], name: str, lo: float, hi: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number; unset it or give a value in [{lo:g}, {hi:g}]") from None
    if not (lo <= value <= hi):  # also rejects NaN
        raise ValueError(f"{name}={raw!r} is out of range; give a value in [{lo:g}, {hi:g}]")
    return value


def from_env(environ: Mapping[str, str]) -> FaultSettings:
    """Read MODELDEPLOY_FAULT_ERROR_RATE (0..1) and MODELDEPLOY_FAULT_LATENCY_MS (0..600000)."""
    return FaultSettings(
        error_rate=_read(environ, config.ENV_FAULT_ERROR_RATE, 0.0, 1.0),
        latency_ms=_read(environ, config.ENV_FAULT_LATENCY_MS, 0.0, 600_000.0),
    )
