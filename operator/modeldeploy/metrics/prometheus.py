"""Prometheus as a MetricProvider: the HTTP API's instant query, with timeouts and optional auth.

Auth comes from a Secret named in the spec (keys: `token` for a bearer token, `username` and
`password` for basic auth, `ca.crt` for a private CA); the controller reads it and passes the
values here, decoded by `credentials_from_secret`.

Why every failure is a `ProviderError`: the controller turns a ProviderError into an `Error`
verdict that the engine counts (and rolls back on after `errorLimit`). Any other exception
escapes the analysis, fails the reconcile, and fails it again on every retry with nothing
counted - so a bad answer (a matrix from a query without `rate()`, a string, a value that is
not a number, an HTML login page) or a bad Secret value must never raise anything else.
Messages never contain a credential.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from modeldeploy.metrics import ProviderError

# Secret key -> PrometheusProvider keyword argument.
SECRET_KEYS = {"token": "token", "username": "username", "password": "password", "ca.crt": "ca_pem"}
# Read like Prometheus' own *_file settings: surrounding whitespace (the newline `--from-file`
# keeps) is not part of the credential.
_STRIPPED = ("token", "username", "password")


def credentials_from_secret(secret: dict[str, Any]) -> dict[str, str | None]:
    """The PrometheusProvider keyword arguments (token, username, password, ca_pem) from a Secret.

    Values come base64-encoded from `.data` (what the API server returns) or as plain text from
    `.stringData` (which wins, as it does when Kubernetes writes the Secret). A value that is not
    base64 or not UTF-8 raises ProviderError naming the Secret and key, never the value.
    """
    name = (secret.get("metadata") or {}).get("name", "?")
    data = secret.get("data") or {}
    string_data = secret.get("stringData") or {}
    out: dict[str, str | None] = dict.fromkeys(SECRET_KEYS.values())
    for key, kwarg in SECRET_KEYS.items():
        where = f"Secret {name!r} key {key!r} (analysis.prometheus.secretRef)"
        if key in string_data:
            value = string_data[key]
            if not isinstance(value, str):
                raise ProviderError(f"{where}: stringData value is not a string")
        elif key in data:
            raw = data[key]
            if not isinstance(raw, str):
                raise ProviderError(f"{where}: data value is not a base64 string")
            try:
                decoded = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise ProviderError(f"{where} is not valid base64: put the base64 of the value in .data, "
                                    "or the plain value in .stringData") from None
            try:
                value = decoded.decode("utf-8")
            except UnicodeDecodeError:
                raise ProviderError(f"{where} is not UTF-8 text: credentials must be text "
                                    "(ca.crt a PEM certificate, not DER)") from None
        else:
            continue
        if key in _STRIPPED:
            value = value.strip()
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
                raise ProviderError(f"{where} contains a control character (a line break inside the value?); "
                                    "it cannot be sent in an HTTP header")
        out[kwarg] = value
    return out


def _number(raw: Any, promql: str) -> float:
    """A sample value: Prometheus sends it as a string ("0.25", "NaN", "+Inf")."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ProviderError(f"query result value is not a number: {raw!r:.60}: {promql}")
    try:
        return float(raw)
    except ValueError:
        raise ProviderError(f"query result value is not a number: {raw!r:.60}: {promql}") from None


def _sample(sample: Any, promql: str) -> float:
    """The value of one instant-vector element: {"metric": {...}, "value": [time, "v"]}."""
    value = sample.get("value") if isinstance(sample, dict) else None
    if not isinstance(value, list) or len(value) != 2:
        raise ProviderError(f"malformed vector in prometheus answer (no [time, value] pair): {promql}")
    return _number(value[1], promql)


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
                raw = r.read()
        except urllib.error.HTTPError as e:
            try:
                detail = e.read().decode(errors="replace")[:300]
            except (OSError, http.client.HTTPException):
                detail = ""
            raise ProviderError(f"prometheus returned HTTP {e.code}: {detail}") from e
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, refused, TLS, cut off
            raise ProviderError(f"prometheus at {self.address} unreachable: {e}") from e
        except ValueError as e:  # e.g. http.client rejecting a header; its message would echo the credential
            raise ProviderError(f"request to prometheus at {self.address} could not be sent: "
                                f"{type(e).__name__} (check the address and the Secret's credentials)") from e
        try:
            body = json.loads(raw)
        except ValueError:  # also UnicodeDecodeError
            snippet = raw[:80].decode(errors="replace")
            raise ProviderError(f"prometheus at {self.address} answered with a body that is not JSON "
                                f"(is it the Prometheus API, not a proxy or login page?): {snippet!r}") from None
        if not isinstance(body, dict):
            raise ProviderError(f"prometheus at {self.address} answered with JSON that is not a JSON object "
                                f"({type(body).__name__})")
        if body.get("status") != "success":
            raise ProviderError(f"prometheus query failed: {body.get('errorType')}: {body.get('error')}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise ProviderError(f"malformed response from prometheus at {self.address}: no data object")
        return data

    def query(self, promql: str) -> float | None:
        data = self._get("/api/v1/query", {"query": promql})
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar":
            if not isinstance(result, list) or len(result) != 2:
                raise ProviderError(f"malformed scalar in prometheus answer (no [time, value] pair): {promql}")
            return _number(result[1], promql)
        if kind == "vector":
            if not isinstance(result, list):
                raise ProviderError(f"malformed vector in prometheus answer (result is not a list): {promql}")
            if not result:
                return None
            if len(result) > 1:
                raise ProviderError(f"query returned {len(result)} series, expected one (aggregate with sum()): "
                                    f"{promql}")
            return _sample(result[0], promql)
        if kind == "matrix":
            raise ProviderError("query returned a range vector (matrix); an analysis query must return an instant "
                                "vector or scalar: wrap the range selector in a function such as "
                                f"rate(...[{{{{ interval }}}}]) and aggregate with sum(): {promql}")
        if kind == "string":
            raise ProviderError(f"query returned a string result; an analysis query must return an instant vector "
                                f"or scalar: {promql}")
        if kind is None:
            raise ProviderError(f"malformed response from prometheus at {self.address}: no resultType")
        raise ProviderError(f"prometheus answered with an unknown resultType {kind!r:.40}: {promql}")

    def is_online(self) -> bool:
        try:
            self._get("/api/v1/query", {"query": "1"})
            return True
        except ProviderError:
            return False
