"""Metric providers for canary analysis: a small protocol, one module per backend (Prometheus today).

The rollout engine never talks to a provider; the controller runs the queries and hands the
numbers to the pure analysis functions, so a provider error is just another input the engine
must treat as "not a success".
"""

from __future__ import annotations

from typing import Protocol


class ProviderError(Exception):
    """The provider could not answer (unreachable, timeout, bad query, bad response)."""


class MetricProvider(Protocol):
    def query(self, promql: str) -> float | None:
        """One instant value: a float (possibly NaN), None for an empty result; raises ProviderError."""

    def query_vector(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """Every series of an instant vector as (labels, value) (empty when none); raises ProviderError."""

    def is_online(self) -> bool:
        """Cheap reachability check."""
