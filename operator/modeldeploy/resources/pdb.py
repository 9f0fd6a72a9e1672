"""PodDisruptionBudget: keep serving through node drains once there is more than one replica."""

from __future__ import annotations

from typing import Any

from modeldeploy.api import ModelDeployment
from modeldeploy.resources.common import metadata, selector_labels


def build_pdb(md: ModelDeployment) -> dict[str, Any] | None:
    floor = md.spec.autoscaling.min_replicas if md.spec.autoscaling_on and md.spec.autoscaling else \
        md.spec.desired_replicas
    if floor <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(md, md.name, "stable"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(md, "stable")}},
    }
