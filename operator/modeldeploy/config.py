"""Operator settings, one place, each from an environment variable with a safe default.

The Helm chart and the kustomize install set these through the Deployment's env.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


@dataclass(frozen=True)
class Settings:
    # Every known object is reconciled again this often, so drift is repaired even without an event.
    resync_seconds: float = field(default_factory=lambda: _env_float("MODELDEPLOY_RESYNC_SECONDS", 30.0))
    # Concurrent reconciles (each runs in a thread; the API client pool is sized to match).
    workers: int = field(default_factory=lambda: _env_int("MODELDEPLOY_WORKERS", 16))
    # Retry delay after an error or a semantic problem doubles from base up to max: bounded, never hot.
    backoff_base_seconds: float = field(default_factory=lambda: _env_float("MODELDEPLOY_BACKOFF_BASE_SECONDS", 1.0))
    backoff_max_seconds: float = field(default_factory=lambda: _env_float("MODELDEPLOY_BACKOFF_MAX_SECONDS", 300.0))
    # host:port of /metrics, /healthz and /readyz. Loopback by default; the chart sets 0.0.0.0:8080.
    http_address: str = field(default_factory=lambda: os.environ.get("MODELDEPLOY_HTTP_ADDRESS", "127.0.0.1:8080"))
    # Comma-separated namespaces to watch; empty means cluster-wide.
    namespaces: tuple[str, ...] = field(default_factory=lambda: tuple(
        n.strip() for n in os.environ.get("MODELDEPLOY_NAMESPACES", "").split(",") if n.strip()))
    # kopf peering object name for leader election between replicas; empty = standalone (1 replica).
    peering: str = field(default_factory=lambda: os.environ.get("MODELDEPLOY_PEERING", ""))
    # This replica's peering identity and priority (the highest-priority live replica works; the CLI
    # picks a random priority per process unless set, so two replicas never tie).
    peering_identity: str = field(default_factory=lambda: os.environ.get("MODELDEPLOY_PEERING_IDENTITY", ""))
    peering_priority: int = field(default_factory=lambda: _env_int("MODELDEPLOY_PEERING_PRIORITY", 0))
    # Log format: "json" for log pipelines, "plain" for terminals.
    log_format: str = field(default_factory=lambda: os.environ.get("MODELDEPLOY_LOG_FORMAT", "plain"))
    # Kubeconfig path for running outside a cluster (else in-cluster config / KUBECONFIG).
    kubeconfig: str | None = field(default_factory=lambda: os.environ.get("KUBECONFIG") or None)

    @property
    def http_host_port(self) -> tuple[str, int]:
        host, _, port = self.http_address.rpartition(":")
        return host or "127.0.0.1", int(port)
