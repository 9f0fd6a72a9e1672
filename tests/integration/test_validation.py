"""Bad ModelDeployments are rejected by the API server at `kubectl apply`, with a message that says what to fix.

These run the real kubectl against the real kube-apiserver with our CRD (structural schema +
CEL rules) installed. Nothing is created for any of them. The malformed objects the API's rules
refuse are a table shared with the Python model's test (tests/validation_cases.py).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from pydantic import ValidationError

from modeldeploy.api import ModelDeployment
from tests.conftest import temp_namespace
from tests.unit.test_api import ADDRESS_ACCEPTED, ADDRESS_REFUSED
from tests.validation_cases import ACCEPTED, DELETE, ERROR_RATE, GOOD, PROM, Case, readme_api_example, spec
from tests.validation_cases import CASES as TABLE

pytestmark = pytest.mark.cluster

# What the structural schema refuses before any rule (types, bounds, enums, unknown fields): the API
# server's own words. The rules' cases, shared with the Python model, are tests/validation_cases.py.
CASES = [
    ("missing image", spec(model__image=DELETE), "spec.model.image: Required value"),
    ("replicas wrong type", spec(replicas="two"), 'spec.replicas: Invalid value: "string"'),
    ("negative replicas", spec(replicas=-1), "spec.replicas: Invalid value: -1"),
    ("unknown field", spec(modle={"image": "x"}), 'unknown field "spec.modle"'),
    ("port out of range", spec(model__port=70000), "spec.model.port: Invalid value: 70000"),
    ("step over 100", spec(rollout={"canary": {"steps": [50, 150]}}), "every step must be within 1..100"),
    ("no router", spec(rollout={"canary": {"trafficRouter": {}}}), "set exactly one of replicas"),
    ("bad interval", spec(rollout={"canary": {"interval": "soon"}}),
     "spec.rollout.canary.interval: Invalid value: \"string\": canary.interval must be a Prometheus duration"),
    ("unknown strategy", spec(rollout={"strategy": "BlueGreen"}), 'supported values: "Canary", "Rolling"'),
    ("bad prometheus address", spec(rollout={"analysis": {"prometheus": {"address": "prometheus:9090"}}}),
     "spec.rollout.analysis.prometheus.address: Invalid value"),
    ("failureLimit zero", spec(rollout={"analysis": {"failureLimit": 0}}),
     "spec.rollout.analysis.failureLimit: Invalid value: 0"),
]
# analysis.prometheus.address: the same strings and messages as the Python model (tests/unit/test_api.py),
# which the operator also applies to objects stored before these rules existed.
CASES += [(f"prometheus address {address!r}", spec(rollout={"analysis": {
    "prometheus": {"address": address}, "metrics": [ERROR_RATE]}}),
           f"spec.rollout.analysis.prometheus.address: Invalid value: \"string\": analysis.prometheus.address "
           f"{message}") for address, message in ADDRESS_REFUSED]


def apply(namespace: str, env: dict[str, str], body: dict[str, Any], *flags: str) -> subprocess.CompletedProcess[str]:
    """kubectl apply of `body` as JSON (in YAML, PyYAML leaves strings such as 1e30 unquoted: kubectl reads numbers)."""
    return subprocess.run(["kubectl", "apply", *flags, "-n", namespace, "-f", "-"], input=json.dumps(body), text=True,
                          capture_output=True, env=env)


def nothing_created(namespace: str, env: dict[str, str]) -> bool:
    got = subprocess.run(["kubectl", "get", "mdep", "-n", namespace, "-o", "name"], text=True, capture_output=True,
                         env=env, check=True)
    return got.stdout.strip() == ""


@pytest.fixture(scope="module")
def shared_namespace(api_client: client.ApiClient, crd: str) -> Iterator[str]:
    """One namespace for the table's many refused objects (nothing is ever created in it)."""
    with temp_namespace(api_client) as name:
        yield name


@pytest.mark.parametrize("case", TABLE, ids=[c.id for c in TABLE])
def test_rule_refuses_at_apply_with_the_models_message(shared_namespace: str, kube_env: dict[str, str],
                                                       case: Case) -> None:
    """Every malformed object of the shared table (the unit tests check the Python model on the same ones)."""
    out = apply(shared_namespace, kube_env, case.body)
    assert out.returncode != 0, out.stdout
    assert case.message in out.stderr, out.stderr
    assert "should match" not in out.stderr, out.stderr  # no raw regex in any message
    assert nothing_created(shared_namespace, kube_env)


NEAR_MISSES = [*ACCEPTED, ("readme-api-example", {**readme_api_example(), "metadata": {"name": "readme"}})]


@pytest.mark.parametrize("body", [b for _, b in NEAR_MISSES], ids=[i for i, _ in NEAR_MISSES])
def test_near_misses_and_the_readme_example_are_accepted(shared_namespace: str, kube_env: dict[str, str],
                                                         body: dict[str, Any]) -> None:
    out = apply(shared_namespace, kube_env, body, "--dry-run=server")
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("body,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rejected_with_a_clear_message(shared_namespace: str, kube_env: dict[str, str], body: dict,
                                       message: str) -> None:
    out = apply(shared_namespace, kube_env, body)
    assert out.returncode != 0, out.stdout
    assert message in out.stderr, out.stderr
    assert nothing_created(shared_namespace, kube_env)


def test_the_good_object_is_accepted_and_defaulted(crd: str, namespace: str, kube_env: dict[str, str]) -> None:
    out = subprocess.run(["kubectl", "apply", "-n", namespace, "-f", "-"], input=yaml.safe_dump(GOOD), text=True,
                         capture_output=True, env=kube_env)
    assert out.returncode == 0, out.stderr
    got = yaml.safe_load(subprocess.run(["kubectl", "get", "mdep", "bad", "-n", namespace, "-o", "yaml"], text=True,
                                        capture_output=True, env=kube_env, check=True).stdout)
    spec = got["spec"]
    assert spec["model"]["port"] == 3000
    assert spec["rollout"]["strategy"] == "Canary"
    assert spec["rollout"]["canary"]["steps"] == [10, 25, 50]
    assert spec["rollout"]["canary"]["trafficRouter"] == {"replicas": {}}
    assert spec["rollout"]["analysis"]["minRequests"] == 20


def _duration_message(field: str) -> str:
    return (f"{field} must be a Prometheus duration such as 30s, 1m30s or 2m (whole numbers; units y w d h m s ms, "
            "each at most once, largest first), greater than zero")


INTERVAL, TIMEOUT = _duration_message("canary.interval"), _duration_message("analysis.prometheus.timeout")
INTERVAL_TOO_LONG = "canary.interval is too long: Prometheus durations stop at 292y"

# (interval, timeout, the API server's message or None when accepted). Prometheus rejects 1.5m, 30s1m,
# 1m1h (fractions, repeated or out-of-order units), 0s (range selectors must be > 0) and 293y (overflow).
DURATIONS = [
    ("1.5m", "5s", INTERVAL), ("30s1m", "5s", INTERVAL), ("1m1h", "5s", INTERVAL), ("0s", "5s", INTERVAL),
    ("5x", "5s", INTERVAL), ("0", "5s", INTERVAL), ("1ms1s", "5s", INTERVAL),
    ("30s", "1.5s", TIMEOUT), ("30s", "0s", TIMEOUT), ("30s", "5s5s", TIMEOUT),
    ("293y", "5s", INTERVAL_TOO_LONG), ("9223372036855ms", "5s", INTERVAL_TOO_LONG),
    ("1m30s", "5s", None), ("500ms", "2s500ms", None), ("1h", "1m", None), ("2d", "5s", None),
    ("1y2w3d4h5m6s7ms", "5s", None), ("0m30s", "5s", None), ("292y", "5s", None), ("9223372036854ms", "5s", None),
]


@pytest.mark.parametrize("interval,timeout,message", DURATIONS, ids=[f"{i}/{t}" for i, t, _ in DURATIONS])
def test_durations_are_exactly_what_prometheus_accepts(shared_namespace: str, kube_env: dict[str, str],
                                                       interval: str, timeout: str, message: str | None) -> None:
    """The API server (CEL) and the Python model (ModelDeployment.model_validate) agree on every case."""
    body = spec(rollout={"canary": {"interval": interval},
                              "analysis": {"prometheus": {**PROM, "timeout": timeout}, "metrics": [ERROR_RATE]}})
    out = subprocess.run(["kubectl", "create", "--dry-run=server", "-n", shared_namespace, "-f", "-"],
                         input=yaml.safe_dump(body), text=True, capture_output=True, env=kube_env)
    if message is None:
        assert out.returncode == 0, out.stderr
        ModelDeployment.model_validate(body)
    else:
        assert out.returncode != 0, out.stdout
        assert message in out.stderr, out.stderr
        with pytest.raises(ValidationError) as err:
            ModelDeployment.model_validate(body)
        assert message in str(err.value)


@pytest.mark.parametrize("address", ADDRESS_ACCEPTED)
def test_prometheus_base_urls_are_accepted(shared_namespace: str, kube_env: dict[str, str], address: str) -> None:
    body = spec(rollout={"analysis": {"prometheus": {"address": address}, "metrics": [ERROR_RATE]}})
    out = subprocess.run(["kubectl", "create", "--dry-run=server", "-n", shared_namespace, "-f", "-"],
                         input=yaml.safe_dump(body), text=True, capture_output=True, env=kube_env)
    assert out.returncode == 0, out.stderr
    ModelDeployment.model_validate(body)
