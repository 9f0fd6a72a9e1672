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
from modeldeploy.metrics.prometheus import PrometheusProvider

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
    t = threading.Thread(target=srv.serve_forever, daemon=True)
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
