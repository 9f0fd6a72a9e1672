"""Prometheus as a MetricProvider: the HTTP API's instant query, with timeouts and optional auth.

Auth comes from a Secret named in the spec (keys: `token` for a bearer token, `username` and
`password` for basic auth, `ca.crt` for a private CA); the controller reads it and passes the
values here.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from modeldeploy.metrics import ProviderError


@dataclass
class PrometheusProvider:
    address: str
    timeout: float = 5.0
    token: str | None = None
    username: str | None = None
    password: str | None = None
    ca_pem: str | None = None
    insecure_skip_verify: bool = False

    def _context(self) -> ssl.SSLContext | None:
        if not self.address.startswith("https://"):
            return None
        ctx = ssl.create_default_context(cadata=self.ca_pem) if self.ca_pem else ssl.create_default_context()
        if self.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _get(self, path: str, params: dict[str, str]) -> dict:
        url = f"{self.address.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, headers={"Accept": "application/json"})
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        elif self.username is not None:
            cred = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
            req.add_header("Authorization", f"Basic {cred}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._context()) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:300]
            raise ProviderError(f"prometheus returned HTTP {e.code}: {detail}") from e
        except (OSError, ValueError) as e:  # URLError, timeouts, refused, bad JSON
            raise ProviderError(f"prometheus at {self.address} unreachable: {e}") from e
        if body.get("status") != "success":
            raise ProviderError(f"prometheus query failed: {body.get('errorType')}: {body.get('error')}")
        data: dict = body["data"]
        return data

    def query(self, promql: str) -> float | None:
        data = self._get("/api/v1/query", {"query": promql})
        result = data.get("result")
        if data.get("resultType") == "scalar" and result:
            return float(result[1])
        if not result:
            return None
        if len(result) > 1:
            raise ProviderError(f"query returned {len(result)} series, expected one (aggregate with sum()): {promql}")
        return float(result[0]["value"][1])

    def is_online(self) -> bool:
        try:
            self._get("/api/v1/query", {"query": "1"})
            return True
        except ProviderError:
            return False
