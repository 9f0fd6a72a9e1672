"""The API's Python-side rules: durations are exactly Prometheus' syntax, with worded messages.

The same strings against the real API server (the CRD's CEL rules) are in
tests/integration/test_validation.py, and against a real Prometheus in test_prometheus.py.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modeldeploy.api import Analysis, Canary, ModelDeployment, PrometheusProvider, parse_duration
from modeldeploy.crd import generate

INTERVAL_MESSAGE = ("canary.interval must be a Prometheus duration such as 30s, 1m30s or 2m (whole numbers; units "
                    "y w d h m s ms, each at most once, largest first), greater than zero")


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("2d", 172800.0), ("1w", 604800.0),
    ("1y", 365 * 86400.0), ("1y2w3d4h5m6s7ms", 365 * 86400 + 17 * 86400 + 4 * 3600 + 5 * 60 + 6.007),
    ("1s500ms", 1.5), ("5ms", 0.005), ("01m", 60.0), ("0m30s", 30.0), ("0s", 0.0), ("0", 0.0),
    ("9223372036854ms", 9223372036.854),
])
def test_parse_duration_reads_every_prometheus_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["1.5m", "30s1m", "1m1h", "1ms1s", "1d1w", "1m1m", "5x", "1M", "m", "", " 1m",
                                  "1m ", "-1m", "1h-30m", "293y", "9223372036855ms"])
def test_parse_duration_rejects_what_prometheus_rejects(text: str) -> None:
    """1.5m and 30s1m were accepted before (fractions, any unit order) and failed in PromQL."""
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text", ["1.5m", "30s1m", "1m1h", "0s", "0", "0m0s", "5x", ""])
def test_model_rejects_bad_or_zero_durations_with_the_crd_message(text: str) -> None:
    with pytest.raises(ValidationError, match=r"canary\.interval must be a Prometheus duration") as err:
        Canary.model_validate({"interval": text})
    assert INTERVAL_MESSAGE in str(err.value)
    with pytest.raises(ValidationError, match=r"analysis\.prometheus\.timeout must be a Prometheus duration"):
        PrometheusProvider.model_validate({"address": "http://p:9090", "timeout": text})


def test_model_rejects_durations_prometheus_cannot_hold() -> None:
    with pytest.raises(ValidationError, match=r"canary\.interval is too long: Prometheus durations stop at 292y"):
        Canary.model_validate({"interval": "293y"})
    assert Canary.model_validate({"interval": "292y"}).interval == "292y"


def test_whole_object_validation_uses_the_same_rule() -> None:
    body = {"metadata": {"name": "m"}, "spec": {"model": {"image": "r/x:1"}, "rollout": {"canary": {
        "interval": "1m30s"}, "analysis": {"prometheus": {"address": "http://p:9090", "timeout": "2s500ms"},
                                        "metrics": [{"name": "error-rate", "max": 0.01}]}}}}
    md = ModelDeployment.model_validate(body)
    assert parse_duration(md.spec.rollout.canary.interval) == 90.0
    body["spec"]["rollout"]["canary"]["interval"] = "1.5m"  # type: ignore[index]
    with pytest.raises(ValidationError, match=r"canary\.interval must be a Prometheus duration"):
        ModelDeployment.model_validate(body)


DURATION_FIELDS = [(Canary, {}, "interval", "canary.interval"),
                   (PrometheusProvider, {"address": "http://p:9090"}, "timeout", "analysis.prometheus.timeout"),
                   (Analysis, {}, "measurementInterval", "analysis.measurementInterval")]


@pytest.mark.parametrize(("model", "base", "key", "name"), DURATION_FIELDS, ids=[f[3] for f in DURATION_FIELDS])
def test_every_duration_field_uses_the_prometheus_rules(model, base, key, name) -> None:  # type: ignore[no-untyped-def]
    """Empty, zero and fractional durations are refused by each field in Python and carry the CEL rules in
    the CRD (no bare regex pattern, which would say nothing readable and would let "" through)."""
    for bad in ("", "0s", "1.5m", "30s1m"):
        with pytest.raises(ValidationError, match=f"{name} must be a Prometheus duration"):
            model.model_validate({**base, key: bad})
    assert model.model_validate({**base, key: "1m30s"})
    node = generate()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for part in ["rollout", *name.split(".")[:-1]]:
        node = node["properties"][part]
    field = node["properties"][key]
    assert "pattern" not in field and field["maxLength"] == 16
    assert [r["message"].split(" ")[0] for r in field["x-kubernetes-validations"]] == [name, name]


# analysis.prometheus.address: a base URL, never credentials, a query or a fragment (issue 11, item 5).
# The same strings against the real API server are in tests/integration/test_validation.py.
ADDRESS_REFUSED = [
    ("http://user:pass@prometheus:9090", "must not contain user info"),
    ("http://token@prometheus:9090/api", "must not contain user info"),
    ("https://prometheus.example/collect?x=", "must not contain a query"),
    ("https://evil.example/steal?", "must not contain a query"),
    ("https://evil.example/steal#", "must not contain a fragment"),
    ("http://prometheus:9090/#/graph", "must not contain a fragment"),
    ("prometheus:9090", "must be an http:// or https:// URL"),
    ("ftp://prometheus:9090", "must be an http:// or https:// URL"),
    ("http://", "must be an http:// or https:// URL"),
    ("http:///api", "must be an http:// or https:// URL"),
    ("http://prom etheus:9090", "must be an http:// or https:// URL"),
    ("http://prometheus:9090/\x1b[31m", "must be an http:// or https:// URL"),
]
ADDRESS_ACCEPTED = ["http://prometheus.monitoring:9090", "https://thanos.example/prefix/",
                    "http://10.0.0.1:10902", "http://[fd00::1]:8080/prometheus", "http://mimir:8080/prometheus"]


@pytest.mark.parametrize(("address", "message"), ADDRESS_REFUSED)
def test_prometheus_address_with_credentials_query_or_fragment_is_refused(address: str, message: str) -> None:
    with pytest.raises(ValidationError, match=r"analysis\.prometheus\.address " + message):
        PrometheusProvider.model_validate({"address": address})


@pytest.mark.parametrize("address", ADDRESS_ACCEPTED)
def test_prometheus_base_urls_are_accepted(address: str) -> None:
    assert PrometheusProvider.model_validate({"address": address}).address == address


def test_the_crd_carries_the_address_rules_instead_of_a_bare_pattern() -> None:
    crd = generate()
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    address = schema["properties"]["spec"]["properties"]["rollout"]["properties"]["analysis"]["properties"][
        "prometheus"]["properties"]["address"]
    assert "pattern" not in address
    messages = [r["message"] for r in address["x-kubernetes-validations"]]
    assert any("must not contain user info" in m for m in messages)
    assert any("must not contain a query" in m for m in messages)
    assert any("must not contain a fragment" in m for m in messages)


def test_the_readmes_api_example_is_a_valid_modeldeployment() -> None:
    """The README documents every field with one example object: it must be one the API accepts."""
    import re
    from pathlib import Path

    import yaml

    from modeldeploy.api import ModelDeployment

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("## The ModelDeployment API", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "no yaml block in the README's API section"
    md = ModelDeployment.model_validate(yaml.safe_load(block.group(1)))
    names = [m.name for m in md.spec.rollout.analysis.metrics]
    assert {"error-rate", "prediction-drift", "input-drift"} <= set(names)
