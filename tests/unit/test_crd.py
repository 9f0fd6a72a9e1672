"""The committed CRD is exactly what the pydantic API generates, and it is a structural schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modeldeploy.api import ModelDeploymentSpec
from modeldeploy.crd import generate, render

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for k, v in node.get("properties", {}).items():
            out += _walk(v, f"{path}.{k}")
        if isinstance(node.get("items"), dict):
            out += _walk(node["items"], path + "[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += _walk(node["additionalProperties"], path + "{}")
    return out


def test_committed_crd_matches_generated() -> None:
    assert CRD_FILE.read_text() == render(), "run: .venv/bin/python -m modeldeploy.crd > " + str(CRD_FILE)


def test_schema_is_structural_and_documented() -> None:
    schema = generate()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema["properties"]["spec"]) + _walk(schema["properties"]["status"]):
        assert not {"$ref", "anyOf", "allOf", "oneOf", "title"} & node.keys(), path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        if path.count(".") >= 1 and not path.endswith(("{}", "[]")):
            assert node.get("description"), f"{path} has no description"
        if "properties" in node:
            assert "additionalProperties" not in node, path


def test_crd_names_columns_and_subresources() -> None:
    crd = generate()
    assert crd["metadata"]["name"] == "modeldeployments.modeldeploy.io"
    assert crd["spec"]["names"]["shortNames"] == ["mdep"]
    v = crd["spec"]["versions"][0]
    columns = v["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == ["Phase", "Stable", "Canary", "Weight", "Ready", "Model", "Canary Model",
                                            "Age"]
    by_name = {c["name"]: c for c in columns}
    assert by_name["Model"]["jsonPath"] == ".status.stable.card.summary"
    assert by_name["Canary Model"]["jsonPath"] == ".status.canary.card.summary"
    assert by_name["Canary Model"]["priority"] == 1  # kubectl get -o wide only
    assert all("priority" not in c for c in columns if c["name"] != "Canary Model")
    assert v["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert "status" in v["subresources"]


def test_defaults_in_crd_agree_with_pydantic_defaults() -> None:
    """Applying the CRD's defaults to a minimal object gives what pydantic gives."""
    schema = generate()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def apply_defaults(node: dict, value: Any) -> Any:
        if node.get("type") == "object" and isinstance(value, dict):
            for k, sub in node.get("properties", {}).items():
                if k not in value and "default" in sub:
                    value[k] = yaml.safe_load(yaml.safe_dump(sub["default"]))
                if k in value:
                    value[k] = apply_defaults(sub, value[k])
        return value

    minimal = {"model": {"image": "r/x:1"}}
    defaulted = apply_defaults(schema, minimal)
    from_server = ModelDeploymentSpec.model_validate(defaulted).model_dump(by_alias=True, exclude_none=True)
    from_python = ModelDeploymentSpec.model_validate({"model": {"image": "r/x:1"}}).model_dump(
        by_alias=True, exclude_none=True)
    assert from_server == from_python
    assert defaulted["rollout"]["canary"]["steps"] == [10, 25, 50]
    assert defaulted["rollout"]["canary"]["trafficRouter"] == {"replicas": {}}
