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
from modeldeploy.metrics.prometheus import PrometheusProvider, credentials_from_secret

RESPONSES: dict[str, tuple[int, Any]] = {}
SEEN: list[dict[str, str]] = []


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        from urllib.parse import parse_qs, urlparse

        q = parse_qs(urlparse(self.path).query).get("query", [""])[0]
        SEEN.append({"query": q, "auth": self.headers.get("Authorization", "")})
        code, body = RESPONSES.get(q, (200, {"status": "success", "data": {"resultType": "vector", "result": []}}))
        payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
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


def secret(data: dict[str, Any] | None = None, string_data: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "prom-auth"}}
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
