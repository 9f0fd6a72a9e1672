"""Prometheus credentials cannot be exfiltrated (issue 11, item 5): the real operator, the real API server.

Anyone who may create a ModelDeployment chooses `analysis.prometheus.address` and names a Secret
in `secretRef`. Here the operator runs with an allow-list of Prometheus addresses; two small
recording HTTP listeners on 127.0.0.1 stand in for "where the credentials would go" (one on the
allow-list, one off it) and record every request with its Authorization header. A Secret's token
reaches the allowed listener only while the Secret carries the opt-in label; the other listener,
an unlabelled Secret and a labelled service-account token Secret never send anything, and each
refusal is a Degraded phase whose message says what to do, with one Warning Event, retried with
backoff.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localoperator import OperatorProcess
from tests.conftest import wait_for
from tests.integration.test_operator import Cluster, mdep

pytestmark = pytest.mark.cluster

TOKEN = "s3cr3t-prometheus-token"  # a test value
CREDENTIALS_LABEL = "modeldeploy.io/prometheus-credentials"  # the documented opt-in label
EMPTY = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()
ONE = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {}, "value": [0, "1"]}]}}).encode()


class Recorder:
    """An HTTP listener on 127.0.0.1 that answers like an empty Prometheus and records each request."""

    def __init__(self, answer: bytes = EMPTY) -> None:
        self.requests: list[dict[str, str]] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append({"path": self.path, "auth": self.headers.get("Authorization", "")})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def sent_by(self, name: str) -> list[dict[str, str]]:
        """Requests whose PromQL names this ModelDeployment (the queries carry its name label)."""
        return [r for r in self.requests if name in r["path"]]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def listeners() -> Iterator[tuple[Recorder, Recorder]]:
    allowed, outside = Recorder(), Recorder()
    try:
        yield allowed, outside
    finally:
        allowed.stop()
        outside.stop()


@pytest.fixture(scope="module")
def guarded(crd: str, kubeconfig: str, tmp_path_factory: pytest.TempPathFactory,
            listeners: tuple[Recorder, Recorder]) -> Iterator[OperatorProcess]:
    """The operator with an allow-list holding only the first listener (and a real Prometheus' usual address)."""
    allowed, _ = listeners
    log = Path(tmp_path_factory.mktemp("guarded")) / "operator.log"
    env = {"MODELDEPLOY_PROMETHEUS_ALLOWED_ADDRESSES": f"http://prometheus.monitoring:9090,{allowed.url}"}
    with OperatorProcess(kubeconfig, log, extra_env=env).start() as op:
        yield op


@pytest.fixture
def k(api_client: client.ApiClient, namespace: str, guarded: OperatorProcess) -> Cluster:
    return Cluster(api_client, namespace)


def canary_spec(address: str, secret: str = "prom-auth") -> dict[str, Any]:
    return {"rollout": {"strategy": "Canary", "canary": {"steps": [50], "interval": "4s"}, "analysis": {
        "prometheus": {"address": address, "secretRef": {"name": secret}}, "measurementInterval": "1s",
        "minRequests": 0, "metrics": [{"name": "error-rate", "max": 0.5}]}}}


def make_secret(k: Cluster, labels: dict[str, str] | None, name: str = "prom-auth") -> None:
    k.core.create_namespaced_secret(k.ns, client.V1Secret(
        metadata=client.V1ObjectMeta(name=name, labels=labels), string_data={"token": TOKEN}))


def label(k: Cluster, name: str, value: str | None) -> None:
    k.core.patch_namespaced_secret(name, k.ns, {"metadata": {"labels": {CREDENTIALS_LABEL: value}}})


def degraded_with(k: Cluster, name: str, text: str) -> bool:
    st = k.get(name).get("status", {})
    return st.get("phase") == "Degraded" and text in st.get("message", "") and k.condition(name, "Degraded") == "True"


def several_reconciles(op: OperatorProcess, n: int = 3) -> None:
    """Wait until the operator has retried (with backoff) `n` more times: enough chances to send anything."""
    start = op.counter('modeldeploy_reconciles_total{result="backoff"}')
    wait_for(lambda: op.counter('modeldeploy_reconciles_total{result="backoff"}') >= start + n, 60,
             what=f"{n} more reconciles with backoff")


def one_warning(k: Cluster, name: str, text: str) -> None:
    """Exactly one Warning Event for the refusal (Events follow the status write: wait for it), no storm."""
    def warnings() -> list[client.CoreV1Event]:
        return [e for e in k.events(name) if e.type == "Warning" and e.reason == "PhaseDegraded"]

    wait_for(warnings, 10, what="a PhaseDegraded Warning Event")
    got = warnings()
    assert len(got) == 1 and text in got[0].message, [(e.reason, e.message) for e in got]


V2 = {"image": "registry.example/room-price:v2", "bento": "room_price:v2"}


def test_the_token_is_sent_only_while_the_secret_is_labelled(k: Cluster, guarded: OperatorProcess,
                                                             listeners: tuple[Recorder, Recorder]) -> None:
    allowed, _ = listeners
    make_secret(k, {CREDENTIALS_LABEL: "true"})
    k.create(mdep("labelled", **canary_spec(allowed.url)))
    wait_for(lambda: k.healthy("labelled"), 60, what="v1 Healthy")
    label(k, "prom-auth", None)  # the owner withdraws the opt-in, then a canary starts
    k.patch("labelled", {"model": V2})
    hint = f"add the label {CREDENTIALS_LABEL}=true"
    wait_for(lambda: degraded_with(k, "labelled", hint), 30, what="Degraded naming the label to add")
    several_reconciles(guarded)
    assert allowed.sent_by("labelled") == [], "queried with the credentials of an unlabelled Secret"
    one_warning(k, "labelled", hint)
    assert k.deployment("labelled-canary") is None  # blocked: no canary that would be judged without metrics

    label(k, "prom-auth", "true")  # opt in again: the canary runs and is measured, with the token
    wait_for(lambda: [r for r in allowed.sent_by("labelled") if r["auth"] == f"Bearer {TOKEN}"], 60,
             what="a query with the Secret's bearer token at the allowed address")
    assert all(r["path"].startswith("/api/v1/query?") for r in allowed.sent_by("labelled"))


def test_an_address_off_the_allow_list_gets_nothing(k: Cluster, guarded: OperatorProcess,
                                                    listeners: tuple[Recorder, Recorder]) -> None:
    allowed, outside = listeners
    make_secret(k, {CREDENTIALS_LABEL: "true"})
    k.create(mdep("elsewhere", **canary_spec(outside.url)))
    wait_for(lambda: degraded_with(k, "elsewhere", "is not on the operator's allow-list"), 30,
             what="Degraded naming the allow-list")
    msg = k.get("elsewhere")["status"]["message"]
    assert allowed.url in msg and "prometheus.allowedAddresses" in msg
    several_reconciles(guarded)
    assert outside.requests == []
    one_warning(k, "elsewhere", "allow-list")
    assert k.deployment("elsewhere") is None


def test_a_service_account_token_is_never_sent_even_when_labelled(k: Cluster, guarded: OperatorProcess,
                                                                  listeners: tuple[Recorder, Recorder]) -> None:
    allowed, _ = listeners
    k.core.create_namespaced_secret(k.ns, client.V1Secret(
        metadata=client.V1ObjectMeta(name="default-token", labels={CREDENTIALS_LABEL: "true"},
                                     annotations={"kubernetes.io/service-account.name": "default"}),
        type="kubernetes.io/service-account-token"))
    wait_for(lambda: (k.core.read_namespaced_secret("default-token", k.ns).data or {}).get("token"), 30,
             what="the token controller filled in the token")
    k.create(mdep("satoken", **canary_spec(allowed.url, secret="default-token")))
    wait_for(lambda: degraded_with(k, "satoken", "service-account tokens are never sent to Prometheus"), 30,
             what="Degraded refusing the service-account token")
    several_reconciles(guarded)
    assert allowed.sent_by("satoken") == []
    status_text = json.dumps(k.get("satoken")["status"])
    token = k.core.read_namespaced_secret("default-token", k.ns).data["token"]
    assert token not in status_text
