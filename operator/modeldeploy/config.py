"""Operator settings, one place, each from an environment variable with a safe default.

The Helm chart and the kustomize install set these through the Deployment's env.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

# Where a pod finds its own namespace (the ServiceAccount token mount).
INCLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={raw!r}: expected true or false")


def _incluster_namespace() -> str:
    try:
        return INCLUSTER_NAMESPACE_FILE.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Settings:
    # Every known object is reconciled again this often, so drift is repaired even without an event.
    resync_seconds: float = field(default_factory=lambda: _env_float("MODELDEPLOY_RESYNC_SECONDS", 30.0))
    # Concurrent reconciles (each runs in a thread, and creates a new object's children on as many
    # more; the API client pool is sized to match).
    workers: int = field(default_factory=lambda: _env_int("MODELDEPLOY_WORKERS", 16))
    # Retry delay after an error or a semantic problem doubles from base up to max: bounded, never hot.
    backoff_base_seconds: float = field(default_factory=lambda: _env_float("MODELDEPLOY_BACKOFF_BASE_SECONDS", 1.0))
    backoff_max_seconds: float = field(default_factory=lambda: _env_float("MODELDEPLOY_BACKOFF_MAX_SECONDS", 300.0))
    # host:port of /metrics, /healthz and /readyz. Loopback by default; the chart sets 0.0.0.0:8080.
    http_address: str = field(default_factory=lambda: os.environ.get("MODELDEPLOY_HTTP_ADDRESS", "127.0.0.1:8080"))
    # Comma-separated namespaces to watch; empty means cluster-wide.
    namespaces: tuple[str, ...] = field(default_factory=lambda: tuple(
        n.strip() for n in os.environ.get("MODELDEPLOY_NAMESPACES", "").split(",") if n.strip()))
    # Leader election between replicas on a coordination.k8s.io/v1 Lease: only the holder reconciles,
    # the others keep their watches warm and stand by. Off for a single replica (the chart turns it
    # on when replicaCount > 1 or leaderElection.enabled).
    leader_election: bool = field(default_factory=lambda: _env_bool("MODELDEPLOY_LEADER_ELECTION", False))
    # The Lease's name, and its namespace: the chart sets the release namespace (downward API); out
    # of a cluster set it yourself (empty: the pod's own namespace when in a cluster, else an error).
    lease_name: str = field(default_factory=lambda: os.environ.get("MODELDEPLOY_LEASE_NAME", "modeldeploy"))
    lease_namespace: str = field(default_factory=lambda: os.environ.get("MODELDEPLOY_LEASE_NAMESPACE", "")
                                 or _incluster_namespace())
    # This replica's holderIdentity in the Lease: unique per process (pod name + random suffix), so a
    # restarted container never mistakes its predecessor's lease for its own.
    lease_identity: str = field(default_factory=lambda: os.environ.get("MODELDEPLOY_LEASE_IDENTITY", "")
                                or f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}")
    # How long a Lease is valid after its last renewal: a standby takes it over this long after it
    # last saw the record change, so after an unclean death (SIGKILL, node loss) takeover takes at
    # most lease + one retry period of observation lag: ~12.4 s with the defaults (target: 15 s).
    lease_duration_seconds: float = field(
        default_factory=lambda: _env_float("MODELDEPLOY_LEASE_DURATION_SECONDS", 10.0))
    # The leader stops working when it has not renewed for this long. Must be shorter than the lease
    # duration, so it stands down before anyone else may acquire (3 s of margin with the defaults).
    lease_renew_deadline_seconds: float = field(
        default_factory=lambda: _env_float("MODELDEPLOY_LEASE_RENEW_DEADLINE_SECONDS", 7.0))
    # Time between acquire/renew attempts (a standby's are jittered by up to 20 %, client-go's factor).
    lease_retry_period_seconds: float = field(
        default_factory=lambda: _env_float("MODELDEPLOY_LEASE_RETRY_PERIOD_SECONDS", 2.0))
    # Log format: "json" for log pipelines, "plain" for terminals.
    log_format: str = field(default_factory=lambda: os.environ.get("MODELDEPLOY_LOG_FORMAT", "plain"))
    # Kubeconfig path for running outside a cluster (else in-cluster config / KUBECONFIG).
    kubeconfig: str | None = field(default_factory=lambda: os.environ.get("KUBECONFIG") or None)
    # The kubeconfig context to use (`modeldeploy operator --context`), for kopf's connection and the
    # operator's own client alike; empty: the kubeconfig's current-context (or in-cluster config).
    kube_context: str | None = field(default_factory=lambda: os.environ.get("MODELDEPLOY_KUBE_CONTEXT") or None)
    # Prometheus base URLs the canary analysis may query, comma-separated (the chart's
    # prometheus.allowedAddresses), e.g. "http://prometheus.monitoring:9090,https://thanos.example/q".
    # An analysis.prometheus.address is allowed when it has an entry's scheme, host and port and a
    # path at or below the entry's; any other is Degraded and never queried (no credentials leave).
    # Empty: any address.
    prometheus_allowed_addresses: tuple[str, ...] = field(default_factory=lambda: tuple(
        a.strip() for a in os.environ.get("MODELDEPLOY_PROMETHEUS_ALLOWED_ADDRESSES", "").split(",") if a.strip()))

    def __post_init__(self) -> None:
        from modeldeploy.api import check_address

        for address in self.prometheus_allowed_addresses:
            try:
                check_address(address)
            except ValueError as e:
                raise ValueError(f"MODELDEPLOY_PROMETHEUS_ALLOWED_ADDRESSES entry {address!r}: "
                                 f"{str(e).replace('analysis.prometheus.address', 'an entry')}") from None

    @property
    def http_host_port(self) -> tuple[str, int]:
        host, _, port = self.http_address.rpartition(":")
        return host or "127.0.0.1", int(port)
