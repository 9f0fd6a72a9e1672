"""Traffic routers: how a canary weight becomes traffic. A small protocol, one module per backend.

Routers are pure, like the builders: given the ModelDeployment, the desired canary weight and
the stable Deployment's current replicas, a router says how many canary pods to run, which
routing objects must exist (with the weights in them), and what weight that achieves. The
controller applies the objects with compare-before-write, so a router never does I/O.
"""

from __future__ import annotations

from typing import Any, Protocol

from modeldeploy.api import ModelDeployment


class TrafficRouter(Protocol):
    name: str

    def canary_replicas(self, stable_replicas: int, weight: int) -> int:
        """Canary pods to run for `weight` percent, given the stable's *current* replicas."""

    def objects(self, md: ModelDeployment, weight: int) -> list[dict[str, Any]]:
        """Routing objects that must exist (Services, HTTPRoute, VirtualService) carrying the weight."""

    def kinds(self) -> list[str]:
        """Kinds of the objects this router manages (to find and delete leftovers)."""

    def achieved_weight(self, weight: int, stable_ready: int, canary_ready: int) -> int:
        """The traffic percent the canary actually gets, reported in status."""


def router_for(md: ModelDeployment) -> TrafficRouter:
    """Factory keyed on the spec's trafficRouter."""
    from modeldeploy.routers.gatewayapi import GatewayAPIRouter
    from modeldeploy.routers.istio import IstioRouter
    from modeldeploy.routers.replicas import ReplicasRouter

    kind = md.spec.rollout.canary.traffic_router.kind
    if kind == "gatewayAPI":
        return GatewayAPIRouter()
    if kind == "istio":
        return IstioRouter()
    return ReplicasRouter()
