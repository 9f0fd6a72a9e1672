"""Prometheus as a MetricProvider: the HTTP API's instant query, with timeouts and optional auth.

Auth comes from a Secret named in the spec (keys: `token` for a bearer token, `username` and
`password` for basic auth, `ca.crt` for a private CA); the controller reads it and passes the
values here, decoded by `credentials_from_secret`.

Why a Secret must opt in (`CREDENTIALS_LABEL`), and why an address may be allow-listed: anyone who
may create a ModelDeployment can name any Secret of the namespace and any URL, and the operator
would send that Secret's values there (a service-account token, a registry password). So a
Secret's values are only ever used when its owner labelled it for this purpose, never when it is a
service-account token, and only towards addresses the operator's allow-list admits
(`address_allowed`; empty list: any). What comes back is not trusted either: error bodies are
scrubbed of anything that looks like a credential and of control characters, and shortened
(`scrub`), before they reach status and Events.

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
import re
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


# The opt-in: a Secret's values are used as Prometheus credentials only when it carries this label.
CREDENTIALS_LABEL = "modeldeploy.io/prometheus-credentials"
CREDENTIALS_LABEL_VALUE = "true"
# Secret types never sent anywhere, labelled or not.
REFUSED_SECRET_TYPES = ("kubernetes.io/service-account-token",)


def secret_refusal(secret: dict[str, Any]) -> str | None:
    """Why this Secret's values must not be used as Prometheus credentials, or None when they may."""
    meta = secret.get("metadata") or {}
    name = meta.get("name", "?")
    where = f"Secret {name!r} (analysis.prometheus.secretRef)"
    if secret.get("type") in REFUSED_SECRET_TYPES:
        return (f"{where} is a {secret['type']} Secret: service-account tokens are never sent to Prometheus; "
                f"put the Prometheus credentials in a Secret of their own")
    if (meta.get("labels") or {}).get(CREDENTIALS_LABEL) != CREDENTIALS_LABEL_VALUE:
        return (f"{where} is not labelled for use as Prometheus credentials: add the label "
                f"{CREDENTIALS_LABEL}={CREDENTIALS_LABEL_VALUE} (kubectl label secret {name} "
                f"{CREDENTIALS_LABEL}={CREDENTIALS_LABEL_VALUE})")
    return None


def normalize_address(address: str) -> tuple[str, str, str]:
    """(scheme, host:port, path without trailing slash), lowercased where URLs are case-insensitive and
    with the scheme's default port filled in, so equal addresses compare equal."""
    parts = urllib.parse.urlsplit(address.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    port = port or {"http": 80, "https": 443}.get(scheme)
    return scheme, f"{host}:{port}", parts.path.rstrip("/")


def address_allowed(address: str, allowed: tuple[str, ...]) -> bool:
    """True when `allowed` is empty, or `address` is one of its entries or below one (same scheme, host
    and port; the entry's path a prefix of the address' path at a `/` boundary)."""
    if not allowed:
        return True
    scheme, hostport, path = normalize_address(address)
    for entry in allowed:
        e_scheme, e_hostport, e_path = normalize_address(entry)
        if (scheme, hostport) == (e_scheme, e_hostport) and (path == e_path or path.startswith(e_path + "/")):
            return True
    return False


# Error text from the other end is not trusted: what may reach status and Events.
SCRUB_LIMIT = 200
_REDACTED = "[redacted]"
# Credential-looking text: auth schemes with their value, key=value / key: value pairs with a
# credential-like key, JWTs (service-account tokens), and long opaque tokens.
_CREDENTIAL_PATTERNS = [
    re.compile(r"(?i)\b(bearer|basic|digest|negotiate)\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie|x-api-key|api[-_]?key|token|"
               r"access[-_]?token|password|passwd|secret|credentials?)\b(\W{1,3})[^\s,;&\"']+"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
    # long opaque tokens (letters and digits mixed: not a metric name such as bentoml_service_request_total)
    re.compile(r"\b(?=[A-Za-z0-9_+/-]*[0-9])(?=[A-Za-z0-9_+/-]*[A-Za-z])[A-Za-z0-9_+/-]{32,}={0,2}"),
]
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]+")


def scrub(text: str, secrets: tuple[str | None, ...] = (), limit: int = SCRUB_LIMIT) -> str:
    """`text` fit for status and Events: the given secret values and anything credential-like redacted,
    control and bidi characters (ANSI escapes, line breaks) turned into spaces, at most `limit` characters."""
    for value in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(value, _REDACTED)
    text = _CONTROL.sub(" ", text)
    for pattern in _CREDENTIAL_PATTERNS:
        if pattern.groups >= 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{_REDACTED}", text)
        elif pattern.groups == 1:
            text = pattern.sub(lambda m: f"{m.group(1)} {_REDACTED}", text)
        else:
            text = pattern.sub(_REDACTED, text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def credentials_from_secret(secret: dict[str, Any]) -> dict[str, str | None]:
    """The PrometheusProvider keyword arguments (token, username, password, ca_pem) from a Secret.

    Only from a Secret that opted in (`secret_refusal`): any other raises ProviderError saying why.
    Values come base64-encoded from `.data` (what the API server returns) or as plain text from
    `.stringData` (which wins, as it does when Kubernetes writes the Secret). A value that is not
    base64 or not UTF-8 raises ProviderError naming the Secret and key, never the value.
    """
    refusal = secret_refusal(secret)
    if refusal is not None:
        raise ProviderError(refusal)
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

    def _scrub(self, text: str, limit: int = SCRUB_LIMIT) -> str:
        basic = f"{self.username}:{self.password or ''}" if self.username is not None else None
        encoded = base64.b64encode(basic.encode()).decode() if basic else None
        return scrub(text, (self.token, self.password, basic, encoded), limit=limit)

    def _get(self, path: str, params: dict[str, str]) -> dict:
        parts = urllib.parse.urlsplit(self.address)
        if parts.username is not None or parts.password is not None or parts.query or parts.fragment \
                or "?" in self.address or "#" in self.address:
            raise ProviderError("analysis.prometheus.address must be a base URL without user info, query or "
                                "fragment (put credentials in the Secret named by analysis.prometheus.secretRef)")
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
                detail = e.read(4096).decode(errors="replace")
            except (OSError, http.client.HTTPException):
                detail = ""
            try:  # Prometheus' own error object: say what it says, not its JSON
                err = json.loads(detail)
                if isinstance(err, dict) and "error" in err:
                    detail = f"{err.get('errorType')}: {err.get('error')}"
            except ValueError:
                pass
            raise ProviderError(f"prometheus returned HTTP {e.code}: {self._scrub(detail)}") from e
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, refused, TLS, cut off
            raise ProviderError(f"prometheus at {self.address} unreachable: {self._scrub(str(e))}") from e
        except ValueError as e:  # e.g. http.client rejecting a header; its message would echo the credential
            raise ProviderError(f"request to prometheus at {self.address} could not be sent: "
                                f"{type(e).__name__} (check the address and the Secret's credentials)") from e
        try:
            body = json.loads(raw)
        except ValueError:  # also UnicodeDecodeError
            snippet = self._scrub(raw[:400].decode(errors="replace"), limit=80)
            raise ProviderError(f"prometheus at {self.address} answered with a body that is not JSON "
                                f"(is it the Prometheus API, not a proxy or login page?): {snippet!r}") from None
        if not isinstance(body, dict):
            raise ProviderError(f"prometheus at {self.address} answered with JSON that is not a JSON object "
                                f"({type(body).__name__})")
        if body.get("status") != "success":
            reason = f"{body.get('errorType')}: {body.get('error')}"
            raise ProviderError(f"prometheus query failed: {self._scrub(reason)}")
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

    def query_vector(self, promql: str) -> list[tuple[dict[str, str], float]]:
        data = self._get("/api/v1/query", {"query": promql})
        kind, result = data.get("resultType"), data.get("result")
        if kind != "vector" or not isinstance(result, list):
            raise ProviderError(f"query returned a {kind} result, expected an instant vector: {promql}")
        out = []
        for sample in result:
            labels = sample.get("metric") if isinstance(sample, dict) else None
            if not isinstance(labels, dict):
                raise ProviderError(f"malformed vector in prometheus answer (no labels): {promql}")
            out.append(({str(k): str(v) for k, v in labels.items()}, _sample(sample, promql)))
        return out

    def is_online(self) -> bool:
        try:
            self._get("/api/v1/query", {"query": "1"})
            return True
        except ProviderError:
            return False
