"""Services: one in front of the model (both tracks), and per-track ones for L7 routers.

With the default `replicas` router the main Service selects stable and canary pods alike, so
traffic splits by replica count. Gateway API and Istio routers need a Service per track to name
as weighted backends.
"""

from __future__ import annotations

from typing import Any

from modeldeploy.api import ModelDeployment
from modeldeploy.resources.common import Track, metadata, selector_labels, track_service_name


def _ports(md: ModelDeployment) -> list[dict[str, Any]]:
    return [{"name": "http", "port": md.spec.service.port, "targetPort": "http", "protocol": "TCP"}]


def build_service(md: ModelDeployment) -> dict[str, Any]:
    """The Service clients use. L7 routers steer by track; the replicas router by pod count."""
    router = md.spec.rollout.canary.traffic_router.kind
    selector = selector_labels(md) if router == "replicas" else selector_labels(md, "stable")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(md, md.name),
        "spec": {"type": md.spec.service.type, "selector": selector, "ports": _ports(md)},
    }


def build_track_service(md: ModelDeployment, track: Track) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(md, track_service_name(md, track), track),
        "spec": {"type": "ClusterIP", "selector": selector_labels(md, track), "ports": _ports(md)},
    }
