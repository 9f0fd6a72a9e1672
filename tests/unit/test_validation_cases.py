"""The Python model refuses the malformed objects of tests/validation_cases.py with the API server's words.

tests/integration/test_validation.py applies the same bodies to a real API server (the CRD's CEL
rules). Here: `ModelDeployment.model_validate` (what the operator reads objects with, and what
`modeldeploy manifest` checks with) gives the same message; every rule of the API has a case; the
CRD says no raw regex; and a model spec kept in status stays readable when a newer rule refuses it.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from modeldeploy.api import Checked, ModelDeployment, Rule, parse_quantity
from modeldeploy.crd import _models_by_title, generate
from tests.validation_cases import ACCEPTED, CASES, GOOD, Case, readme_api_example

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "manifests" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_model_refuses_with_the_api_servers_message(case: Case) -> None:
    with pytest.raises(ValidationError) as err:
        ModelDeployment.model_validate(case.body)
    assert case.message in str(err.value)


@pytest.mark.parametrize("body", [b for _, b in ACCEPTED], ids=[i for i, _ in ACCEPTED])
def test_near_misses_are_accepted(body: dict[str, Any]) -> None:
    ModelDeployment.model_validate(body)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_are_accepted(path: Path) -> None:
    ModelDeployment.model_validate(yaml.safe_load(path.read_text()))


def test_the_readme_api_example_is_accepted() -> None:
    ModelDeployment.model_validate({**readme_api_example(), "metadata": {"name": "room-price"}})


@pytest.mark.parametrize(("text", "value"), [
    ("500m", Fraction(1, 2)), (2, Fraction(2)), ("1.5Gi", Fraction(3 * 2**29)), ("1e3", Fraction(1000)), ("1k", 1000),
    (".5", Fraction(1, 2)), ("5.", 5), ("1u", Fraction(1, 10**6)), ("1e-70", Fraction(1, 10**9)),  # nano, rounded up
    ("100000000000000000000Ei", 2**63 - 1),  # binary suffixes cap at 2^63-1 (decimal ones stay exact)
    ("1e30", 10**30), ("1K", None), ("-1", None), ("1e", None), ("512mb", None), ("0x10", None), (" 1", None),
])
def test_quantities_read_as_the_api_server_reads_them(text: int | str, value: Fraction | int | None) -> None:
    """As resource.ParseQuantity and the CEL quantity library compare them (checked against a real API server)."""
    assert parse_quantity(text) == value


def _rules(model: type[BaseModel]) -> list[Rule]:
    """The model's own rules and those on its fields (Annotated[..., Checked(...)], in lists too)."""
    out = list(getattr(model, "RULES", ()))
    for field in model.model_fields.values():
        metadata = [*field.metadata, *_metadata(field.annotation)]
        out += [r for m in metadata if isinstance(m, Checked) for r in m.rules]
    return out


def _metadata(annotation: Any) -> list[Any]:
    """Annotated[...] metadata anywhere inside a type (list[Annotated[str, ...]], Annotated[...] | None)."""
    return [*getattr(annotation, "__metadata__", ()),
            *(m for arg in getattr(annotation, "__args__", ()) for m in _metadata(arg))]


ALL_RULES = {r.message: r for m in [*_models_by_title().values(), ModelDeployment] for r in _rules(m)}


def test_every_rule_has_a_malformed_case() -> None:
    assert len(ALL_RULES) >= 50
    untested = [m for m in ALL_RULES if not any(c.message in m for c in CASES)]
    # Not reachable with one defect: "too long" durations are in test_api.py's own table.
    untested = [m for m in untested if "is too long: Prometheus durations stop at 292y" not in m]
    assert not untested


def test_the_table_is_large_and_its_ids_unique() -> None:
    assert len(CASES) >= 50
    assert len({c.id for c in CASES}) == len(CASES)


def _nodes(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, list):
        return [n for item in node for n in _nodes(item)]
    if not isinstance(node, dict):
        return []
    return [node, *(n for v in node.values() for n in _nodes(v))]


def test_no_field_has_a_bare_pattern_and_every_crd_rule_is_a_model_rule() -> None:
    """A `pattern` would make the API server answer with a raw regex ("should match '^...$'"), and a CEL
    rule without its Python twin would let the operator and `modeldeploy manifest` disagree."""
    schema = generate()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    nodes = _nodes(schema)
    assert not [n["pattern"] for n in nodes if isinstance(n.get("pattern"), str)]
    in_crd = {r["message"] for n in nodes for r in n.get("x-kubernetes-validations", [])}
    assert in_crd == set(ALL_RULES)
    assert not any("x-kubernetes-validations" in n for n in _nodes(schema["properties"]["status"]))


def test_a_stable_model_kept_in_status_stays_readable_under_newer_rules() -> None:
    """status.stableModel was admitted under the rules of its day: the object must stay readable (so its
    next spec can replace it) although the same model is refused as a spec."""
    old = {"image": "registry.example/room-price:1", "env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}
    body = {**GOOD, "status": {"stableModel": old}}
    md = ModelDeployment.model_validate(body)
    assert md.status.stable_model is not None and [e.name for e in md.status.stable_model.env] == ["A", "A"]
    with pytest.raises(ValidationError, match="each name may appear only once"):
        ModelDeployment.model_validate({**GOOD, "spec": {"model": old}})
    with pytest.raises(ValidationError):  # the schema itself still holds
        ModelDeployment.model_validate({**GOOD, "status": {"stableModel": {"image": 5}}})
