"""The Prometheus provider's HTTP handling, against a tiny local HTTP server standing in for the API.

(The real Prometheus is exercised by the integration and end-to-end tiers; this pins down
auth headers and every failure shape: errors, empty results, NaN, ambiguous vectors.)
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modeldeploy.metrics import ProviderError
from modeldeploy.metrics.prometheus import (
    CREDENTIALS_LABEL,
    PrometheusProvider,
    address_allowed,
    credentials_from_secret,
    scrub,
)

RESPONSES: dict[str, tuple[int, Any]] = {}
SEEN: list[dict[str, str]] = []


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        from urllib.parse import parse_qs, urlparse

        q = parse_qs(urlparse(self.path).query).get("query", [""])[0]
        auth = self.headers.get("Authorization", "")
        SEEN.append({"query": q, "auth": auth, "path": self.path})
        code, body = RESPONSES.get(q, (200, {"status": "success", "data": {"resultType": "vector", "result": []}}))
        payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        payload = payload.replace(b"{AUTH}", auth.encode())  # an endpoint that echoes what it was sent
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    RESPONSES.clear()
    SEEN.clear()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def vector(*values: str) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": {}, "value": [0, v]} for v in values]}}


def test_values_empty_nan_and_ambiguous(server: str) -> None:
    RESPONSES.update({"one": (200, vector("0.25")), "nan": (200, vector("NaN")), "two": (200, vector("1", "2"))})
    p = PrometheusProvider(server)
    assert p.query("one") == 0.25
    assert p.query("none") is None
    assert math.isnan(p.query("nan") or 0.0)
    with pytest.raises(ProviderError, match="expected one"):
        p.query("two")
    assert p.is_online()


def test_http_and_query_errors(server: str) -> None:
    RESPONSES["bad"] = (400, {"status": "error", "errorType": "bad_data", "error": "parse error"})
    RESPONSES["junk"] = (200, "not json")
    p = PrometheusProvider(server)
    with pytest.raises(ProviderError, match="HTTP 400"):
        p.query("bad")
    with pytest.raises(ProviderError):
        p.query("junk")


def test_unreachable_is_an_error_not_a_value() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = PrometheusProvider(f"http://127.0.0.1:{port}", timeout=1)
    with pytest.raises(ProviderError, match="unreachable"):
        p.query("up")
    assert not p.is_online()


def test_bearer_and_basic_auth(server: str) -> None:
    PrometheusProvider(server, token="t0k3n").query("a")
    PrometheusProvider(server, username="ml", password="pw").query("b")
    assert SEEN[0]["auth"] == "Bearer t0k3n"
    assert SEEN[1]["auth"] == "Basic bWw6cHc="  # base64("ml:pw")


def ok(data: Any) -> dict[str, Any]:
    return {"status": "success", "data": data}


@pytest.mark.parametrize(("body", "message"), [
    (ok({"resultType": "matrix", "result": [{"metric": {}, "values": [[0, "1"], [15, "2"]]}]}),
     "range vector.*instant vector or scalar"),
    (ok({"resultType": "string", "result": [0, "hello"]}), "string result.*instant vector or scalar"),
    (ok({"resultType": "vector", "result": [{"metric": {}, "value": [0, "lots"]}]}), "not a number: 'lots'"),
    (ok({"resultType": "vector", "result": [{"metric": {}}]}), "malformed vector"),
    (ok({"resultType": "vector", "result": [{"metric": {}, "value": [0, True]}]}), "not a number: True"),
    (ok({"resultType": "vector", "result": {"not": "a list"}}), "malformed vector"),
    (ok({"resultType": "scalar", "result": [0]}), "malformed scalar"),
    (ok({"resultType": "scalar", "result": [0, None]}), "not a number"),
    (ok({"result": []}), "no resultType"),
    (ok(["not", "an", "object"]), "malformed response"),
    ({"status": "success"}, "malformed response"),
    ([1, 2, 3], "not a JSON object"),
    ("null", "not a JSON object"),
    ('"just a string"', "not a JSON object"),
    ("not json", "not JSON"),
    ({"status": "error", "errorType": "execution", "error": "query timed out"}, "execution: query timed out"),
])
def test_every_malformed_answer_is_a_provider_error(server: str, body: Any, message: str) -> None:
    """A matrix answer (a query without an aggregation over time) used to raise KeyError, a string
    answer TypeError, both outside ProviderError, so the reconcile failed forever."""
    RESPONSES["q"] = (200, body)
    with pytest.raises(ProviderError, match=message):
        PrometheusProvider(server).query("q")


def test_scalar_result(server: str) -> None:
    RESPONSES["s"] = (200, ok({"resultType": "scalar", "result": [0, "0.5"]}))
    assert PrometheusProvider(server).query("s") == 0.5


def b64(text: bytes) -> str:
    import base64

    return base64.b64encode(text).decode()


OPT_IN = {CREDENTIALS_LABEL: "true"}


def secret(data: dict[str, Any] | None = None, string_data: dict[str, Any] | None = None,
           labels: dict[str, str] | None = None, type_: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret",
                           "metadata": {"name": "prom-auth", "labels": OPT_IN if labels is None else labels}}
    if type_ is not None:
        out["type"] = type_
    if data is not None:
        out["data"] = data
    if string_data is not None:
        out["stringData"] = string_data
    return out


def test_credentials_from_secret_data_and_string_data() -> None:
    got = credentials_from_secret(secret({"token": b64(b"t0k3n\n"), "ca.crt": b64(b"-----BEGIN CERTIFICATE-----\n"),
                                          "other": b64(b"\xff ignored")}))
    # the trailing newline `kubectl create secret --from-file` keeps is not part of the token
    assert got == {"token": "t0k3n", "username": None, "password": None, "ca_pem": "-----BEGIN CERTIFICATE-----\n"}
    got = credentials_from_secret(secret({"username": b64(b"ml"), "password": b64(b"old")},
                                         string_data={"password": "pw"}))
    assert got == {"token": None, "username": "ml", "password": "pw", "ca_pem": None}
    assert credentials_from_secret(secret()) == dict.fromkeys(("token", "username", "password", "ca_pem"))


@pytest.mark.parametrize(("sec", "message"), [
    (secret({"password": b64(b"p\xe4ss")}), "'password' .*is not UTF-8"),  # latin-1, not UTF-8
    (secret({"ca.crt": b64(b"\x30\x82\x01\x0a")}), "'ca.crt' .*is not UTF-8"),  # DER, not PEM
    (secret({"token": "s3cr3t-not-base64!"}), "'token' .*is not valid base64"),
    (secret({"token": "czNjcjN0"[:-1]}), "'token' .*is not valid base64"),  # bad padding
    (secret({"token": 42}), "'token'.*not a base64 string"),
    (secret(string_data={"username": ["ml"]}), "'username'.*not a string"),
    (secret({"token": b64(b"s3cr3t\nmore")}), "'token'.*control character"),
])
def test_bad_secret_values_name_the_key_never_the_value(sec: dict[str, Any], message: str) -> None:
    """The controller decoded with b64decode(v).decode(): a non-UTF-8 value raised UnicodeDecodeError
    outside ProviderError and failed the reconcile forever."""
    with pytest.raises(ProviderError, match=message) as err:
        credentials_from_secret(sec)
    assert "prom-auth" in str(err.value)
    assert "s3cr3t" not in str(err.value) and "czNjcjN0" not in str(err.value)


# --------------------------------------------------------------------------------------------
# credentials cannot be exfiltrated (issue 11, item 5)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels", [{}, {CREDENTIALS_LABEL: "yes"}, {CREDENTIALS_LABEL: ""},
                                    {"modeldeploy.io/prometheus": "true"}])
def test_a_secret_without_the_opt_in_label_is_never_used(labels: dict[str, str]) -> None:
    with pytest.raises(ProviderError) as err:
        credentials_from_secret(secret({"token": b64(b"s3cr3t-token")}, labels=labels))
    msg = str(err.value)
    assert f"add the label {CREDENTIALS_LABEL}=true" in msg and "prom-auth" in msg
    assert "s3cr3t" not in msg


def test_a_service_account_token_secret_is_refused_even_when_labelled() -> None:
    sa = secret({"token": b64(b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2ln"), "ca.crt": b64(b"pem")},
                type_="kubernetes.io/service-account-token")
    with pytest.raises(ProviderError, match="service-account tokens are never sent to Prometheus") as err:
        credentials_from_secret(sa)
    assert "eyJ" not in str(err.value)
    assert credentials_from_secret(secret({"token": b64(b"t")}, type_="Opaque"))["token"] == "t"


ECHO = "unauthorized: got Authorization: {AUTH}\n\x1b[31mlogin at /login\x1b[0m\r\n" + "x" * 2000


@pytest.mark.parametrize("kwargs", [{"token": "s3cr3t-token-value"}, {"username": "ml", "password": "hunter2-pw"}])
def test_error_bodies_that_echo_the_credentials_are_scrubbed_and_shortened(server: str, kwargs: dict) -> None:
    """An endpoint (a proxy, or any URL a user put in the spec) answering 401 with the request's own
    Authorization header in the body: up to 300 characters of it went to status and Events."""
    RESPONSES["q"] = (401, ECHO)
    RESPONSES["e"] = (200, {"status": "error", "errorType": "bad_data", "error": "token {AUTH} rejected\n\x07"})
    RESPONSES["j"] = (200, "<html>{AUTH}</html>")
    p = PrometheusProvider(server, **kwargs)
    for q in ("q", "e", "j"):
        with pytest.raises(ProviderError) as err:
            p.query(q)
        msg = str(err.value)
        assert SEEN[-1]["auth"]  # it was sent (to an allowed target), and came back in the body
        for leak in (kwargs.get("token") or kwargs["password"], SEEN[-1]["auth"].split()[-1]):
            assert leak not in msg, (q, msg)
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in msg), repr(msg)
        assert len(msg) <= 300, len(msg)


def test_scrub_keeps_prometheus_errors_readable() -> None:
    text = 'bad_data: 1:5: parse error: unexpected "}" in label matching, expected string'
    assert scrub(text) == text
    assert scrub("a\nb\tc\x1b[0m\u202e") == "a b c [0m"
    assert scrub("Bearer abc.def-ghi") == "Bearer [redacted]"
    assert scrub("password=hunter2&x=1") == "password=[redacted]&x=1"
    assert scrub("token: eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2ln end").startswith("token: [redacted]")
    assert scrub("word " * 100).endswith("...") and len(scrub("word " * 100)) <= 200
    assert scrub("k8Hq2" * 8) == "[redacted]"  # a long opaque token
    name = "bentoml_service_request_duration_seconds_bucket"
    assert scrub(f"no series for {name}") == f"no series for {name}"  # a metric name is not a token
    assert "pw123" not in scrub("echo ml:pw123", secrets=("ml:pw123",))


@pytest.mark.parametrize(("address", "allowed", "ok"), [
    ("http://prometheus.monitoring:9090", (), True),
    ("http://prometheus.monitoring:9090", ("http://prometheus.monitoring:9090",), True),
    ("http://Prometheus.Monitoring:9090/", ("http://prometheus.monitoring:9090",), True),
    ("https://thanos.example/q/tenant", ("https://thanos.example/q",), True),
    ("https://thanos.example:443/q", ("https://thanos.example/q/",), True),
    ("https://thanos.example/qq", ("https://thanos.example/q",), False),  # a prefix only at a / boundary
    ("http://thanos.example/q", ("https://thanos.example/q",), False),  # scheme
    ("http://prometheus.monitoring:9091", ("http://prometheus.monitoring:9090",), False),  # port
    ("http://evil.example", ("http://prometheus.monitoring:9090", "https://thanos.example"), False),
    ("http://prometheus.monitoring:9090.evil.example", ("http://prometheus.monitoring:9090",), False),
])
def test_address_allow_list(address: str, allowed: tuple[str, ...], ok: bool) -> None:
    assert address_allowed(address, allowed) is ok


@pytest.mark.parametrize("address", ["http://u:p@127.0.0.1:1", "http://127.0.0.1:1/x?", "http://127.0.0.1:1/#"])
def test_provider_refuses_addresses_that_would_leak_or_cancel_the_path(address: str) -> None:
    with pytest.raises(ProviderError, match="without user info, query or fragment"):
        PrometheusProvider(address, token="t").query("up")
