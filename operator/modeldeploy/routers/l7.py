"""What the L7 routers (Gateway API, Istio) share: per-track Services, pod sizing, achieved weight.

An L7 router splits requests exactly by weight, so the canary only needs pods for its share of
the stable's replicas (at least one), and the weight it gets is the weight in the route object
once a canary pod is ready. Each backend only says how its route object looks.
"""

from __future__ import annotations

import math
from typing import Any

from modeldeploy.api import ModelDeployment
from modeldeploy.resources.service import build_track_service


class L7Router:
    name = ""
    kind = ""  # the route object's kind

    def route(self, md: ModelDeployment, weight: int) -> dict[str, Any]:
        raise NotImplementedError

    def canary_replicas(self, stable_replicas: int, weight: int) -> int:
        if weight <= 0:
            return 0
        return max(1, math.ceil(stable_replicas * weight / 100))

    def objects(self, md: ModelDeployment, weight: int) -> list[dict[str, Any]]:
        return [build_track_service(md, "stable"), build_track_service(md, "canary"), self.route(md, weight)]

    def kinds(self) -> list[str]:
        return [self.kind]

    def achieved_weight(self, weight: int, stable_ready: int, canary_ready: int) -> int:
        return weight if canary_ready > 0 or weight == 0 else 0
