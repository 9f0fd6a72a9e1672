"""HorizontalPodAutoscaler (autoscaling/v2) for the stable Deployment, when autoscaling is on."""

from __future__ import annotations

from typing import Any

from modeldeploy.api import ModelDeployment
from modeldeploy.resources.common import deployment_name, metadata


def build_hpa(md: ModelDeployment) -> dict[str, Any] | None:
    a = md.spec.autoscaling
    if a is None or not a.enabled:
        return None
    metrics: list[dict[str, Any]] = []
    for resource, target in (("cpu", a.target_cpu_utilization_percentage),
                             ("memory", a.target_memory_utilization_percentage)):
        if target is not None:
            metrics.append({"type": "Resource", "resource": {
                "name": resource, "target": {"type": "Utilization", "averageUtilization": target}}})
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(md, "stable")},
        "minReplicas": a.min_replicas,
        "maxReplicas": a.max_replicas,
    }
    if metrics:
        spec["metrics"] = metrics
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(md, md.name),
        "spec": spec,
    }
