"""Istio: a VirtualService with two weighted routes to the per-track Services."""

from __future__ import annotations

from typing import Any

from modeldeploy.api import ModelDeployment
from modeldeploy.resources.common import Track, metadata, track_service_name
from modeldeploy.routers.l7 import L7Router


class IstioRouter(L7Router):
    name = "istio"
    kind = "VirtualService"

    def route(self, md: ModelDeployment, weight: int) -> dict[str, Any]:
        cfg = md.spec.rollout.canary.traffic_router.istio
        assert cfg is not None
        port = md.spec.service.port

        def dest(track: Track, w: int) -> dict[str, Any]:
            return {"destination": {"host": track_service_name(md, track), "port": {"number": port}}, "weight": w}

        spec: dict[str, Any] = {
            "hosts": list(cfg.hosts) or [md.name],
            "http": [{"name": "canary", "route": [dest("stable", 100 - weight), dest("canary", weight)]}],
        }
        if cfg.gateways:
            spec["gateways"] = list(cfg.gateways)
        return {"apiVersion": "networking.istio.io/v1", "kind": self.kind, "metadata": metadata(md, md.name),
                "spec": spec}
