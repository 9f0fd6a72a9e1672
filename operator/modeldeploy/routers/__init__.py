"""Traffic routers: how a canary weight becomes traffic. A small protocol, one module per backend.

Routers are pure, like the builders: given the ModelDeployment, the desired canary weight and
the stable Deployment's current replicas, a router says how many canary pods to run, which
routing objects must exist (with the weights in them), and what weight that achieves. The
controller applies the objects with compare-before-write, so a router never does I/O.

`step_shares` says, from the same three answers, what share of traffic each canary step can get
at the stable's current size: with the replicas router whole pods allow only k/(stable+k) (one
stable replica: a "10 %" step gets 50 %), and the plan tells the user so (`reconcile.plan`'s
StepsApproximate condition) rather than only reporting the achieved weight once a step runs.
"""

from __future__ import annotations

from dataclasses import dataclass
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


# How far (percentage points) the share a step can get may be from the step itself before the
# plan warns (StepsApproximate): a few points of rounding are what "whole pods" always means.
STEP_TOLERANCE_POINTS = 5
# The largest stable size `replicas_for_steps` looks at (beyond it, an L7 router is the answer).
MAX_SUGGESTED_REPLICAS = 100


@dataclass(frozen=True)
class StepShare:
    step: int      # the step's percent
    share: int     # the percent of traffic the canary gets at that step, all pods ready
    canary: int    # canary pods the router runs for it

    @property
    def approximate(self) -> bool:
        return abs(self.share - self.step) > STEP_TOLERANCE_POINTS


def step_shares(router: TrafficRouter, steps: list[int], stable_replicas: int) -> list[StepShare]:
    """Each step's achievable share with `stable_replicas` stable pods (all pods ready)."""
    out = []
    for step in steps:
        canary = router.canary_replicas(stable_replicas, step)
        out.append(StepShare(step, router.achieved_weight(step, stable_replicas, canary), canary))
    return out


def replicas_for_steps(router: TrafficRouter, steps: list[int]) -> int | None:
    """The smallest stable size at which no step is approximate (None: none up to MAX_SUGGESTED_REPLICAS)."""
    for n in range(1, MAX_SUGGESTED_REPLICAS + 1):
        if not any(s.approximate for s in step_shares(router, steps, n)):
            return n
    return None
