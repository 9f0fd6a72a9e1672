"""Istio: a VirtualService with two weighted routes to the per-track Services."""

from __future__ import annotations

import math
from typing import Any

from modeldeploy.api import ModelDeployment
from modeldeploy.resources.common import metadata, track_service_name
from modeldeploy.resources.service import build_track_service


class IstioRouter:
    name = "istio"

    def canary_replicas(self, stable_replicas: int, weight: int) -> int:
        if weight <= 0:
            return 0
        return max(1, math.ceil(stable_replicas * weight / 100))

    def objects(self, md: ModelDeployment, weight: int) -> list[dict[str, Any]]:
        cfg = md.spec.rollout.canary.traffic_router.istio
        assert cfg is not None
        port = md.spec.service.port

        def dest(track: str, w: int) -> dict[str, Any]:
            return {"destination": {"host": track_service_name(md, track), "port": {"number": port}},  # type: ignore[arg-type]
                    "weight": w}

        spec: dict[str, Any] = {
            "hosts": list(cfg.hosts) or [md.name],
            "http": [{"name": "canary", "route": [dest("stable", 100 - weight), dest("canary", weight)]}],
        }
        if cfg.gateways:
            spec["gateways"] = list(cfg.gateways)
        vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": metadata(md, md.name),
              "spec": spec}
        return [build_track_service(md, "stable"), build_track_service(md, "canary"), vs]

    def kinds(self) -> list[str]:
        return ["VirtualService"]

    def achieved_weight(self, weight: int, stable_ready: int, canary_ready: int) -> int:
        return weight if canary_ready > 0 or weight == 0 else 0
