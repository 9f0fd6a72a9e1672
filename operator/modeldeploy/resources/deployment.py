"""The model server Deployment (one per track), following BentoML's container conventions.

BentoML servers listen on 3000 and serve /livez, /readyz and /metrics; pods run under Pod
Security "restricted" (non-root, no privilege escalation, all capabilities dropped, seccomp
RuntimeDefault, read-only root filesystem with a writable /tmp for BentoML's scratch files).
"""

from __future__ import annotations

from typing import Any

from modeldeploy.api import ModelDeployment, ModelSpec
from modeldeploy.resources.common import (
    ANNOTATION_BENTO,
    LABEL_REVISION,
    Track,
    common_labels,
    deployment_name,
    label_value,
    metadata,
    revision_hash,
    selector_labels,
)


def _env(model: ModelSpec, md: ModelDeployment, track: Track, revision: str) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [e.model_dump(by_alias=True, exclude_none=True) for e in model.env]
    # BentoML reads these; the track/revision help logs and custom metrics tell pods apart.
    env += [
        {"name": "MODELDEPLOY_NAME", "value": md.name},
        {"name": "MODELDEPLOY_TRACK", "value": track},
        {"name": "MODELDEPLOY_REVISION", "value": revision},
    ]
    return env


def pod_template(md: ModelDeployment, track: Track, model: ModelSpec) -> dict[str, Any]:
    revision = revision_hash(model)
    labels = {**common_labels(md, track), LABEL_REVISION: revision}
    if model.bento:
        labels["app.kubernetes.io/version"] = label_value(model.bento.split(":")[-1])
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(model.port),
        "prometheus.io/path": "/metrics",
    }
    if model.bento:
        annotations[ANNOTATION_BENTO] = model.bento
    container: dict[str, Any] = {
        "name": "model",
        "image": model.image,
        "imagePullPolicy": model.image_pull_policy,
        "ports": [{"name": "http", "containerPort": model.port, "protocol": "TCP"}],
        "env": _env(model, md, track, revision),
        "resources": model.resources.model_dump(by_alias=True, exclude_none=True),
        "startupProbe": {"httpGet": {"path": "/livez", "port": "http"},
                         "periodSeconds": 5, "failureThreshold": 60},
        "livenessProbe": {"httpGet": {"path": "/livez", "port": "http"},
                          "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"},
                           "periodSeconds": 5, "failureThreshold": 3},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if model.args:
        container["args"] = list(model.args)
    spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 30,
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    if model.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in model.image_pull_secrets]
    if model.service_account_name:
        spec["serviceAccountName"] = model.service_account_name
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec}


def build_deployment(md: ModelDeployment, track: Track = "stable", model: ModelSpec | None = None,
                     replicas: int | None = None) -> dict[str, Any]:
    """The Deployment for `track` running `model` (default: the spec's model).

    `replicas=None` leaves the field out, so an HPA (or a later writer) owns it: the operator
    never fights the autoscaler.
    """
    model = model or md.spec.model
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(md, track)},
        "template": pod_template(md, track, model),
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "progressDeadlineSeconds": md.spec.progress_deadline_seconds,
        "revisionHistoryLimit": 3,
    }
    if md.spec.paused and md.spec.rollout.strategy == "Rolling":
        spec["paused"] = True
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(md, deployment_name(md, track), track),
        "spec": spec,
    }
