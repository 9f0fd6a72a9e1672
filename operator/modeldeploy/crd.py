"""Generate the ModelDeployment CRD from the pydantic models in `modeldeploy.api`.

Why generate: the API server's structural schema (types, bounds, defaults, CEL rules,
descriptions) and the operator's typed model must agree exactly. Pydantic emits JSON Schema;
Kubernetes wants a *structural* OpenAPI v3 subset (no $ref, no anyOf-with-null, no
`additionalProperties: false` next to `properties`, int-or-string spelled its own way, defaults
for nested objects so inner defaults apply). This module does that translation, and
`python -m modeldeploy.crd > crds/modeldeploy.io_modeldeployments.yaml` writes the file.
A unit test fails if the committed file differs from what this produces.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from pydantic import BaseModel

from modeldeploy import GROUP, KIND, PLURAL, VERSION
from modeldeploy.api import ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus

_DROP = {"title", "additionalProperties"}


def _defaults_for(model: type[BaseModel]) -> dict[str, Any]:
    """CRD defaults for fields whose pydantic default comes from a factory (objects, lists)."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        alias = field.alias or name
        if field.default_factory is None:
            continue
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            out[alias] = value.model_dump(by_alias=True, exclude_none=True, mode="json")
        else:
            out[alias] = value
    return out


def _models_by_title() -> dict[str, type[BaseModel]]:
    """Every pydantic model reachable from spec and status, keyed by its JSON-schema title."""
    seen: dict[str, type[BaseModel]] = {}

    def walk(m: type[BaseModel]) -> None:
        if m.__name__ in seen:
            return
        seen[m.__name__] = m
        for f in m.model_fields.values():
            for t in _types_in(f.annotation):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    walk(t)

    walk(ModelDeploymentSpec)
    walk(ModelDeploymentStatus)
    return seen


def _types_in(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    if not args:
        return [annotation]
    out: list[Any] = []
    for a in args:
        out.extend(_types_in(a))
    return out


def _structural(node: Any, defs: dict[str, Any], models: dict[str, type[BaseModel]]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs, models) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        ref = node.pop("$ref").split("/")[-1]
        merged = {**defs[ref], **node}  # field-level description/default win over the model's
        if "title" in defs[ref]:
            merged["title"] = defs[ref]["title"]
        node = merged
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if node.get("x-kubernetes-int-or-string"):
            pass  # int | str: the extension says it all
        elif len(variants) == 1:
            node = {**variants[0], **node}
            if "$ref" in node:
                return _structural(node, defs, models)
        else:
            raise ValueError(f"cannot express union in a structural schema: {variants}")
    if node.get("default", 0) is None:
        del node["default"]
    title = node.get("title")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP and not (key == "additionalProperties" and "properties" not in node
                                 and isinstance(value, dict)):
            continue
        if key == "properties":
            out[key] = {k: _structural(v, defs, models) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _structural(value, defs, models)
        else:
            out[key] = value
    if title in models and "properties" in out:
        for alias, default in _defaults_for(models[title]).items():
            out["properties"][alias].setdefault("default", default)
        if not out["properties"]:
            out.pop("properties")
    if "properties" in node and "type" not in out:
        out["type"] = "object"
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out.setdefault("properties", {})
    return out


def schema_for(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    raw["title"] = model.__name__
    return _structural(raw, defs, _models_by_title())


def _printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Stable", "type": "string", "jsonPath": ".status.stable.bento",
         "description": "Bento tag of the stable revision"},
        {"name": "Canary", "type": "string", "jsonPath": ".status.canary.bento",
         "description": "Bento tag of the canary revision, if any"},
        {"name": "Weight", "type": "integer", "jsonPath": ".status.canaryWeight",
         "description": "Percent of traffic on the canary"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Model", "type": "string", "jsonPath": ".status.stable.card.summary",
         "description": "Model card of the stable revision: kind, version, runtime, test R² and RMSE, gate"},
        {"name": "Canary Model", "type": "string", "jsonPath": ".status.canary.card.summary", "priority": 1,
         "description": "Model card of the canary revision, if any"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def _without_rules(node: Any) -> Any:
    """The schema without x-kubernetes-validations: status is written by the operator (its stableModel is a
    spec.model admitted earlier, possibly under older rules), so the spec's rules must not block its writes."""
    if isinstance(node, list):
        return [_without_rules(n) for n in node]
    if not isinstance(node, dict):
        return node
    return {k: _without_rules(v) for k, v in node.items() if k != "x-kubernetes-validations"}


def generate() -> dict[str, Any]:
    spec = schema_for(ModelDeploymentSpec)
    status = _without_rules(schema_for(ModelDeploymentStatus))
    spec["description"] = "Desired state: the model to serve and how to roll out new versions of it."
    status["description"] = "Observed state, written by the operator. All rollout state lives here."
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}", "labels": {"app.kubernetes.io/name": "modeldeploy"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": "modeldeployment", "kind": KIND,
                      "listKind": f"{KIND}List", "shortNames": ["mdep"], "categories": ["all", "modeldeploy"]},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {
                    "status": {},
                    "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                              "labelSelectorPath": ".status.selector"},
                },
                "additionalPrinterColumns": _printer_columns(),
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A model served from a BentoML image, with autoscaling and canary "
                                   "rollouts driven by Prometheus analysis.",
                    "required": ["spec"],
                    # Rules on the whole object (metadata.name against the children it names).
                    "x-kubernetes-validations": [r.entry() for r in ModelDeployment.RULES],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec,
                        "status": status,
                    },
                }},
            }],
        },
    }


def render() -> str:
    header = "# Generated by `python -m modeldeploy.crd` from operator/modeldeploy/api.py. Do not edit.\n"
    return header + yaml.safe_dump(generate(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render())
