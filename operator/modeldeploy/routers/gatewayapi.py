"""Gateway API: an HTTPRoute whose two backendRefs (per-track Services) carry the weights.

The user names the parent Gateway(s); the route sends (100 - w) to `<name>-stable` and w to
`<name>-canary`. Canary pods are sized for their share of the stable's replicas (at least 1).
"""

from __future__ import annotations

import math
from typing import Any

from modeldeploy.api import ModelDeployment
from modeldeploy.resources.common import metadata, track_service_name
from modeldeploy.resources.service import build_track_service


class GatewayAPIRouter:
    name = "gatewayAPI"

    def canary_replicas(self, stable_replicas: int, weight: int) -> int:
        if weight <= 0:
            return 0
        return max(1, math.ceil(stable_replicas * weight / 100))

    def objects(self, md: ModelDeployment, weight: int) -> list[dict[str, Any]]:
        cfg = md.spec.rollout.canary.traffic_router.gateway_api
        assert cfg is not None
        port = md.spec.service.port
        spec: dict[str, Any] = {
            "parentRefs": [r.model_dump(by_alias=True, exclude_none=True) for r in cfg.parent_refs],
            "rules": [{"backendRefs": [
                {"name": track_service_name(md, "stable"), "port": port, "weight": 100 - weight},
                {"name": track_service_name(md, "canary"), "port": port, "weight": weight},
            ]}],
        }
        if cfg.hostnames:
            spec["hostnames"] = list(cfg.hostnames)
        route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                 "metadata": metadata(md, md.name), "spec": spec}
        return [build_track_service(md, "stable"), build_track_service(md, "canary"), route]

    def kinds(self) -> list[str]:
        return ["HTTPRoute"]

    def achieved_weight(self, weight: int, stable_ready: int, canary_ready: int) -> int:
        return weight if canary_ready > 0 or weight == 0 else 0
