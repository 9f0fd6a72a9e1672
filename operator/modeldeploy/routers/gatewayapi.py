"""Gateway API: an HTTPRoute whose two backendRefs (per-track Services) carry the weights.

The user names the parent Gateway(s); the route sends (100 - w) to `<name>-stable` and w to
`<name>-canary`. Canary pods are sized for their share of the stable's replicas (at least 1).
"""

from __future__ import annotations

from typing import Any

from modeldeploy.api import ModelDeployment
from modeldeploy.resources.common import metadata, track_service_name
from modeldeploy.routers.l7 import L7Router


class GatewayAPIRouter(L7Router):
    name = "gatewayAPI"
    kind = "HTTPRoute"

    def route(self, md: ModelDeployment, weight: int) -> dict[str, Any]:
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
        return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": self.kind, "metadata": metadata(md, md.name),
                "spec": spec}
