"""Plain Kubernetes: one Service selects stable and canary pods; the weight is the pod ratio.

Canary replicas follow the stable's current (possibly HPA-driven) replica count: for weight w,
canary = stable * w / (100 - w), rounded, at least 1 while w > 0 — so the canary's share of
ready endpoints is as close to w as whole pods allow. The achieved share is what status reports.
"""

from __future__ import annotations

from typing import Any

from modeldeploy.api import ModelDeployment


class ReplicasRouter:
    name = "replicas"

    def canary_replicas(self, stable_replicas: int, weight: int) -> int:
        if weight <= 0:
            return 0
        if weight >= 100 or stable_replicas <= 0:
            return max(1, stable_replicas)
        return max(1, round(stable_replicas * weight / (100 - weight)))

    def objects(self, md: ModelDeployment, weight: int) -> list[dict[str, Any]]:
        return []  # the main Service (built for every strategy) already selects both tracks

    def kinds(self) -> list[str]:
        return []

    def achieved_weight(self, weight: int, stable_ready: int, canary_ready: int) -> int:
        total = stable_ready + canary_ready
        return round(100 * canary_ready / total) if total else 0
