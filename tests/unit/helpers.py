"""Shared builders for unit tests: a ModelDeployment from a minimal dict, and schema validation."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate

from modeldeploy.api import ModelDeployment

K8S_VERSION = "1.34.0"

BASE: dict[str, Any] = {
    "apiVersion": "modeldeploy.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "room-price", "namespace": "ml", "uid": "0c1e7d4e-0000-4000-8000-000000000001",
                 "generation": 1},
    "spec": {"model": {"image": "registry.example/room-price:2f1c", "bento": "room_price:2f1c"}},
}


def md(**spec: Any) -> ModelDeployment:
    body = copy.deepcopy(BASE)
    body["spec"].update(spec)
    return ModelDeployment.model_validate(body)


def validate(obj: dict[str, Any]) -> None:
    """Raise if `obj` is not a valid object of its kind for Kubernetes 1.34 (strict: no unknown fields)."""
    kubernetes_validate.validate(obj, desired_version=K8S_VERSION, strict=True)
