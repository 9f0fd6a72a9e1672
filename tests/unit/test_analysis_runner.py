"""Which Prometheus settings the analysis runner may use at all (issue 11, item 5): no server involved.

The runner is the one place that turns a ModelDeployment's Prometheus settings into a provider;
what it refuses the observer reports as a problem (phase Degraded, an Event, backoff), and nothing
is sent. The same refusals against the real API server and operator are in
tests/integration/test_prometheus_credentials.py.
"""

from __future__ import annotations

import base64
from typing import Any, cast

import pytest
from kubernetes.client.rest import ApiException

from modeldeploy.controller.analysis import AnalysisRunner
from modeldeploy.controller.observe import Observer
from modeldeploy.k8s import Kube
from modeldeploy.metrics import ProviderError
from modeldeploy.metrics.prometheus import CREDENTIALS_LABEL, PrometheusProvider
from tests.unit.helpers import md, stored_md

ADDRESS = "http://prometheus.monitoring:9090"


class SecretsOnly:
    """Just enough of k8s.Kube: Secrets by name (a 403 for any name in `forbidden`)."""

    def __init__(self, secrets: dict[str, dict[str, Any]], forbidden: tuple[str, ...] = ()) -> None:
        self.secrets, self.forbidden = secrets, forbidden
        self.reads: list[tuple[str, str]] = []

    def get(self, kind: str, namespace: str, name: str, uncached_absent: bool = False) -> dict[str, Any] | None:
        self.reads.append((kind, name))
        if name in self.forbidden:
            raise ApiException(status=403, reason="Forbidden")
        return self.secrets.get(name) if kind == "Secret" else None


def secret(name: str, labels: dict[str, str] | None = None, type_: str = "Opaque") -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "type": type_,
            "data": {"token": base64.b64encode(b"s3cr3t").decode()}}


def canary(address: str = ADDRESS, secret_name: str | None = "prom-auth", **extra: Any) -> Any:
    prom: dict[str, Any] = {"address": address}
    if secret_name:
        prom["secretRef"] = {"name": secret_name}
    return md(rollout={"analysis": {"prometheus": prom, "metrics": [{"name": "error-rate", "max": 0.01}]}}, **extra)


def runner(secrets: dict[str, dict[str, Any]], allowed: tuple[str, ...] = (), **kw: Any) -> AnalysisRunner:
    return AnalysisRunner(cast(Kube, SecretsOnly(secrets, **kw)), allowed)


OPTED_IN = {CREDENTIALS_LABEL: "true"}


def test_an_opted_in_secret_and_an_allowed_address_are_used() -> None:
    r = runner({"prom-auth": secret("prom-auth", OPTED_IN)}, allowed=(ADDRESS,))
    assert r.problems(canary()) == []
    assert cast(PrometheusProvider, r.provider_for(canary())).token == "s3cr3t"


@pytest.mark.parametrize(("sec", "message"), [
    (secret("prom-auth"), f"add the label {CREDENTIALS_LABEL}=true"),
    (secret("prom-auth", {CREDENTIALS_LABEL: "True"}), f"add the label {CREDENTIALS_LABEL}=true"),
    (secret("prom-auth", OPTED_IN, "kubernetes.io/service-account-token"), "service-account tokens are never sent"),
])
def test_a_secret_that_did_not_opt_in_is_a_problem_and_never_a_provider(sec: dict, message: str) -> None:
    r = runner({"prom-auth": sec})
    (problem,) = r.problems(canary())
    assert message in problem and "s3cr3t" not in problem
    with pytest.raises(ProviderError, match=message):
        r.provider_for(canary())


def test_an_address_off_the_allow_list_is_refused_before_the_secret_is_read() -> None:
    r = runner({"prom-auth": secret("prom-auth", OPTED_IN)}, allowed=("http://prometheus.monitoring:9090",
                                                                       "https://thanos.example"))
    (problem,) = r.problems(canary(address="http://collector.evil.example:9090"))
    assert "not on the operator's allow-list" in problem
    assert "http://prometheus.monitoring:9090, https://thanos.example" in problem  # names the allow-list
    assert "prometheus.allowedAddresses" in problem
    assert cast(SecretsOnly, r.kube).reads == []


def test_a_secret_the_operator_may_not_read_says_which_chart_value_grants_it() -> None:
    r = runner({}, forbidden=("prom-auth",))
    (problem,) = r.problems(canary())
    assert "may not read Secret 'prom-auth'" in problem and "prometheus.credentials.enabled=true" in problem


def test_no_analysis_no_check_and_the_observer_reports_what_the_runner_refuses() -> None:
    r = runner({"prom-auth": secret("prom-auth")})
    assert r.problems(md()) == []  # no metrics: Prometheus is never used
    assert r.problems(stored_md(rollout={"strategy": "Rolling", "analysis": {
        "prometheus": {"address": ADDRESS, "secretRef": {"name": "prom-auth"}},
        "metrics": [{"name": "error-rate", "max": 0.01}]}})) == []  # Rolling: no analysis runs
    obs = Observer(cast(Kube, r.kube), checks=[r.problems])
    assert obs.observe(canary()).problems and CREDENTIALS_LABEL in obs.observe(canary()).problems[0]


def test_the_allow_list_comes_from_the_environment_and_bad_entries_stop_the_operator(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from modeldeploy.config import Settings

    monkeypatch.setenv("MODELDEPLOY_PROMETHEUS_ALLOWED_ADDRESSES", " http://prometheus.monitoring:9090, "
                                                                  "https://thanos.example/q ,")
    assert Settings().prometheus_allowed_addresses == ("http://prometheus.monitoring:9090",
                                                       "https://thanos.example/q")
    monkeypatch.setenv("MODELDEPLOY_PROMETHEUS_ALLOWED_ADDRESSES", "http://u:p@prometheus:9090")
    with pytest.raises(ValueError, match="entry 'http://u:p@prometheus:9090': an entry must not contain user info"):
        Settings()
    monkeypatch.delenv("MODELDEPLOY_PROMETHEUS_ALLOWED_ADDRESSES")
    assert Settings().prometheus_allowed_addresses == ()
