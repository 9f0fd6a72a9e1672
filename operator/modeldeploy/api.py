"""The typed ModelDeployment API: spec and status as pydantic models.

This is the single source of the schema. `modeldeploy.crd` turns these models (with their field
descriptions, bounds, defaults and the validation rules attached below) into the CRD in `crds/`, and
a test fails when the committed CRD differs from the generated one — so Python and the API server
can never disagree about what a valid object is.

Why every rule is a `Rule` (a CEL expression, the same predicate in Python, one message): whatever
the operator would fail on later (a Deployment the API server refuses, a query Prometheus cannot
run) or would silently ignore (replicas under autoscaling, a query on a built-in metric) must stop
at `kubectl apply`, with a message that names the field and the fix. The API server checks the CEL
side; the operator, `modeldeploy manifest` and the tests check the Python side, which also catches
objects stored before a rule existed. Stating both in one place is what keeps them from drifting,
and no field uses a bare `pattern` (its message would be a raw regex).

Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import core_schema


# --------------------------------------------------------------------------------------------
# Rules: one definition, two checkers
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """One validation: `cel` for the API server (an x-kubernetes-validations rule over `self`),
    `check` for the pydantic model (the same predicate over the Python value), one message for both."""

    cel: str
    check: Callable[[Any], bool]
    message: str
    field_path: str | None = None  # where the API server reports it (CEL fieldPath), if not the rule's node

    def entry(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


def lit(text: str) -> str:
    """A CEL single-quoted string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _py_regex(regex: str) -> re.Pattern[str]:
    """The Python twin of an RE2 regex: `$` is the end of the text (in Python it also matches before
    a final newline). The regexes here never hold a literal `$`."""
    return re.compile(regex.replace("$", r"\Z"))


def matching(regex: str, message: str, max_length: int | None = None) -> Rule:
    """A string rule from one regular expression (a search on both sides; RE2 and Python agree on the
    regexes used here: ASCII classes only) and, optionally, a length limit in characters."""
    pattern = _py_regex(regex)
    cel = f"self.matches({lit(regex)})"
    if max_length is not None:
        cel = f"size(self) <= {max_length} && {cel}"
    return Rule(cel, lambda v: (max_length is None or len(v) <= max_length) and pattern.search(v) is not None,
                message)


def not_matching(regex: str, message: str) -> Rule:
    pattern = _py_regex(regex)
    return Rule(f"!self.matches({lit(regex)})", lambda v: pattern.search(v) is None, message)


# Validation context for what was admitted under the rules of its day (status.stableModel): the schema
# alone, so the running stable does not become unreadable when a later version adds a rule.
STORED = {"modeldeploy.stored": True}


def _stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("modeldeploy.stored"))


def broken(rules: Iterable[Rule], value: Any) -> str | None:
    """The messages of the rules `value` breaks, joined, or None."""
    messages = [r.message for r in rules if not r.check(value)]
    return "; ".join(messages) if messages else None


@dataclass(frozen=True)
class Checked:
    """Annotated[...] metadata: rules on one value, written into the CRD and checked in Python. `schema`
    adds CRD-only bounds (maxLength, maxProperties) that keep the API server's CEL cost estimate low;
    the rules themselves state the real limits, in words."""

    rules: tuple[Rule, ...]
    schema: tuple[tuple[str, int], ...] = ()

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.with_info_after_validator_function(self._validate, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {**handler(schema), **dict(self.schema), "x-kubernetes-validations": [r.entry() for r in self.rules]}

    def _validate(self, value: Any, info: ValidationInfo) -> Any:
        message = None if _stored(info) else broken(self.rules, value)
        if message:
            raise ValueError(message)
        return value


def checked(*rules: Rule, **schema: int) -> Checked:
    return Checked(rules, tuple(schema.items()))


# --------------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------------
# Durations are what Prometheus' model.ParseDuration accepts (PromQL range selectors use it):
# whole numbers, units y w d h m s ms, each at most once, largest first; y = 365d, w = 7d; at most
# 2^63-1 ns. Anything looser (1.5m, 30s1m) passes the API server and then fails every analysis,
# and every canary rolls back. Zero is refused too: a zero window measures nothing (interval: 0s
# promoted a canary at once, "all steps passed").
_DURATION_RE = r"^(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?$"
_DAY_NS = 86400 * 10**9
_UNIT_NS = {"y": 365 * _DAY_NS, "w": 7 * _DAY_NS, "d": _DAY_NS, "h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9,
            "ms": 10**6}
_UNITS = tuple(_UNIT_NS)  # largest first, the order Prometheus requires
_MAX_NS = 2**63 - 1  # Go's time.Duration
_DURATION = _py_regex(_DURATION_RE)
_CEL_FORMAT = "^" + "".join(f"([0-9]+{u})?" for u in _UNITS) + "$"
# For the CEL range rule: the digits of each unit's part (minutes: an `m` not followed by `s`).
_CEL_PART = {**{u: f"[0-9]+{u}" for u in _UNITS}, "m": "[0-9]+m([0-9]|$)"}


def _duration_ns(text: str) -> int | None:
    """Nanoseconds (possibly beyond _MAX_NS), or None when `text` is not Prometheus duration syntax."""
    if text == "0":  # Prometheus takes a bare 0
        return 0
    m = _DURATION.match(text)
    if not text or m is None:
        return None
    return sum(int(n) * _UNIT_NS[u] for n, u in zip(m.groups(), _UNITS, strict=True) if n is not None)


def parse_duration(text: str) -> float:
    """'1m30s' -> 90.0, '2d' -> 172800.0: seconds, for whatever Prometheus' model.ParseDuration accepts
    (zero included); raises ValueError on anything else."""
    ns = _duration_ns(text)
    if ns is None:
        raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 1m30s, 500ms, 2d")
    if ns > _MAX_NS:
        raise ValueError(f"duration {text!r} is out of range (Prometheus durations stop at 292y)")
    return ns / 1e9


def duration(field: str) -> Checked:
    """A non-zero Prometheus duration field; `field` names it in the messages."""
    fmt = f"self.matches('{_CEL_FORMAT}')"

    def seconds(unit: str) -> str:  # the unit's number ('0' + '' when absent) in seconds
        return f"double('0' + self.find('{_CEL_PART[unit]}').find('[0-9]+')) * {_UNIT_NS[unit] / 1e9!r}"

    total = " + ".join(seconds(u) for u in _UNITS)
    # In seconds as doubles: near 2^63 ns their resolution (~2 µs) is far below the 1 ms step of durations.
    return checked(
        Rule(f"{fmt} && self.matches('[1-9]')", lambda v: bool(_duration_ns(v)),
             f"{field} must be a Prometheus duration such as 30s, 1m30s or 2m (whole numbers; units y w d h m s "
             "ms, each at most once, largest first), greater than zero"),
        Rule(f"!{fmt} || {total} <= 9223372036.854775807", lambda v: (_duration_ns(v) or 0) <= _MAX_NS,
             f"{field} is too long: Prometheus durations stop at 292y (2^63 nanoseconds)"),
        maxLength=16)


# --------------------------------------------------------------------------------------------
# The Prometheus address
# --------------------------------------------------------------------------------------------
# The Prometheus address is a base URL the operator appends /api/v1/query to, and sends the Secret's
# credentials to. User info (user:pass@) would put credentials in the spec (readable by anyone who may
# read the object) and a query or fragment would cancel the appended path (`http://evil/x#`), so all
# three are refused with a message that says what to do instead.
_ADDRESS_FIELD = "analysis.prometheus.address"
ADDRESS_RULES = (
    matching(r"^https?://[^/?#\x00-\x20\x7f]+([/?#][^\x00-\x20\x7f]*)?$",
             f"{_ADDRESS_FIELD} must be an http:// or https:// URL with a host and no spaces or control "
             "characters, e.g. http://prometheus.monitoring:9090"),
    not_matching(r"^[^/]*//[^/?#]*@",
                 f"{_ADDRESS_FIELD} must not contain user info (user:password@): put the credentials in a Secret "
                 "labelled modeldeploy.io/prometheus-credentials=true and name it in analysis.prometheus.secretRef"),
    not_matching(r"\?", f"{_ADDRESS_FIELD} must not contain a query (?...): give the base URL only (the operator "
                        "appends /api/v1/query), e.g. https://prometheus.example/prefix"),
    not_matching(r"#", f"{_ADDRESS_FIELD} must not contain a fragment (#...): give the base URL only (the operator "
                       "appends /api/v1/query), e.g. https://prometheus.example/prefix"),
)


def check_address(value: str) -> str:
    """The Python side of the address rules (the operator's allow-list entries use it too)."""
    message = next((r.message for r in ADDRESS_RULES if not r.check(value)), None)
    if message:
        raise ValueError(message)
    return value


# --------------------------------------------------------------------------------------------
# Names, image references, quantities
# --------------------------------------------------------------------------------------------
_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
DNS_LABEL_RE = rf"^{_LABEL}$"
DNS_SUBDOMAIN_RE = rf"^{_SUBDOMAIN}$"


def dns_subdomain(field: str, what: str) -> Checked:
    """An object name (Secret, ConfigMap, ServiceAccount, Gateway): a DNS subdomain, as Kubernetes requires."""
    return checked(matching(DNS_SUBDOMAIN_RE, f"{field} must be the name of a {what}: lowercase letters, digits, "
                                              "'-' and '.', starting and ending with a letter or digit, at most 253 "
                                              "characters", 253), maxLength=253)


def dns_label(field: str, what: str) -> Checked:
    return checked(matching(DNS_LABEL_RE, f"{field} must be the name of a {what}: lowercase letters, digits and "
                                          "'-', starting and ending with a letter or digit, at most 63 characters",
                            63), maxLength=63)


# A container image reference, the grammar of the distribution/reference library that the kubelet
# and containerd parse it with: [host[:port]/]path[:tag][@digest], path components in lowercase.
# Anything else (a space, an upper-case repository, `image:`) passes the API server and then sits in
# InvalidImageName. `modeldeploy manifest` checks --image with this same rule.
_PATH_PART = "[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*"
_HOST_PART = "[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = f"({_HOST_PART}(\\.{_HOST_PART})*|\\[[a-fA-F0-9:]+\\])(:[0-9]+)?"
_TAG = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = "[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_RE = f"^({_HOST}/)?{_PATH_PART}(/{_PATH_PART})*(:{_TAG})?(@{_DIGEST})?$"
IMAGE_RULE = matching(IMAGE_RE, "model.image must be a container image reference such as "
                                "registry.example/room-price:2f1c or registry.example/room-price@sha256:<digest> "
                                "(no spaces; repository path in lowercase; at most 512 characters)", 512)

# A Kubernetes resource quantity (k8s.io/apimachinery resource.ParseQuantity): a decimal number, then
# a binary suffix (Ki..Ei), a decimal one (n, u, m, k, M..E) or an exponent (e3). Negative values are refused
# for container resources, so the rule is for non-negative ones.
QUANTITY_RE = r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i|[numkMGTPE])|[eE]([-+]?[0-9]+))?$"
_SUFFIX = {"": Fraction(1), "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
           "k": Fraction(10**3), "M": Fraction(10**6),
           "G": Fraction(10**9), "T": Fraction(10**12), "P": Fraction(10**15), "E": Fraction(10**18),
           **{f"{p}i": Fraction(2 ** (10 * (i + 1))) for i, p in enumerate("KMGTPE")}}
_QUANTITY = _py_regex(QUANTITY_RE)


def parse_quantity(value: int | str) -> Fraction | None:
    """'500m' -> 1/2, '1Gi' -> 2**30, 2 -> 2; None when not a non-negative Kubernetes quantity."""
    m = _QUANTITY.match(str(value))
    if m is None:
        return None
    number, suffix, exponent = m.group(1), m.group(4), m.group(5)
    # (The exponent is clamped only so that an absurd one cannot make Python compute for ever.)
    scale = Fraction(10) ** max(-1000, min(1000, int(exponent))) if exponent is not None else _SUFFIX[suffix or ""]
    # As resource.ParseQuantity keeps it: rounded up to nano units; a binary-suffixed one capped at 2^63-1
    # (decimal ones stay exact).
    exact = Fraction(math.ceil(Fraction(number) * scale * 10**9), 10**9)
    return min(exact, Fraction(2**63 - 1)) if suffix and suffix.endswith("i") else exact


# Resource names the kubelet knows, or an extended resource (nvidia.com/gpu): a domain, '/', a name.
RESOURCE_NAME_RE = (r"^(cpu|memory|ephemeral-storage|hugepages-.+|"
                    r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_RESOURCE_NAME = _py_regex(RESOURCE_NAME_RE)
_EXTENDED = "/"  # extended resources are the names with a domain; they cannot be overcommitted


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
def _rules_schema(schema: dict[str, Any], cls: type[Any]) -> None:
    rules = getattr(cls, "RULES", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.entry() for r in rules]


class _Model(BaseModel):
    """Base: camelCase aliases, unknown fields rejected (the API server prunes/rejects them too), and
    the class's RULES checked after its fields (and written into its CRD schema)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              json_schema_extra=_rules_schema)
    RULES: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """As the API server reads it: a null is pruned before defaulting (no field is nullable), so
        `targetCpuUtilizationPercentage: null` is the default, 80, on both sides."""
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _rules_hold(self, info: ValidationInfo) -> Self:
        message = None if _stored(info) else broken(self.RULES, self)
        if message:
            raise ValueError(message)
        return self


IntOrString = Annotated[int | str, Field(json_schema_extra={"x-kubernetes-int-or-string": True})]


def _cel_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(lit(i) for i in items) + "]"


# --------------------------------------------------------------------------------------------
# spec.model
# --------------------------------------------------------------------------------------------
CONFIG_KEY = checked(matching(r"^[-._a-zA-Z0-9]+$", "model.env[].valueFrom key must be a Secret or ConfigMap key: "
                                                    "letters, digits, '-', '_' and '.', at most 253 characters", 253),
                     maxLength=253)


class SecretKeyRef(_Model):
    name: Annotated[str, dns_subdomain("model.env[].valueFrom.secretKeyRef.name", "Secret")] = Field(
        description="Name of the Secret in the ModelDeployment's namespace.")
    key: Annotated[str, CONFIG_KEY] = Field(description="Key within the Secret.")
    optional: bool = Field(default=False, description="Do not require the Secret or key to exist.")


class ConfigMapKeyRef(_Model):
    name: Annotated[str, dns_subdomain("model.env[].valueFrom.configMapKeyRef.name", "ConfigMap")] = Field(
        description="Name of the ConfigMap in the ModelDeployment's namespace.")
    key: Annotated[str, CONFIG_KEY] = Field(description="Key within the ConfigMap.")
    optional: bool = Field(default=False, description="Do not require the ConfigMap or key to exist.")


class EnvVarSource(_Model):
    RULES = (Rule("has(self.secretKeyRef) != has(self.configMapKeyRef)",
                  lambda s: (s.secret_key_ref is None) != (s.config_map_key_ref is None),
                  "model.env[].valueFrom must set exactly one of secretKeyRef or configMapKeyRef"),)

    secret_key_ref: SecretKeyRef | None = Field(default=None, description="Take the value from a Secret key.")
    config_map_key_ref: ConfigMapKeyRef | None = Field(
        default=None, description="Take the value from a ConfigMap key.")


class EnvVar(_Model):
    RULES = (Rule("!has(self.value) || !has(self.valueFrom)", lambda e: e.value is None or e.value_from is None,
                  "model.env[]: set either value or valueFrom, not both"),)

    name: Annotated[str, checked(matching(
        r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", "model.env[].name must start with a letter, '_', '-' or '.' and hold "
                                         "only letters, digits, '_', '-' and '.', e.g. LOG_LEVEL (at most 256 "
                                         "characters)", 256), maxLength=256)] = Field(
        description="Environment variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: EnvVarSource | None = Field(default=None, description="Value taken from a Secret or ConfigMap.")


def _quantities(field: str) -> Checked:
    return checked(
        Rule(f"self.all(k, k.matches({lit(RESOURCE_NAME_RE)}))", lambda d: all(_RESOURCE_NAME.match(k) for k in d),
             f"model.resources.{field}: a resource name must be cpu, memory, ephemeral-storage, hugepages-<size> or "
             "an extended resource such as nvidia.com/gpu"),
        Rule(f"self.all(k, string(self[k]).matches({lit(QUANTITY_RE)}))",
             lambda d: all(parse_quantity(v) is not None for v in d.values()),
             f"model.resources.{field}: every value must be a non-negative Kubernetes quantity such as 500m, 2, "
             "512Mi or 1Gi (cpu in cores or millicores, memory in bytes with a suffix)"),
        maxProperties=16)


# maxLength bounds the CEL cost estimate of the rules that read the values (the quantity rule says the limit).
Quantities = dict[str, Annotated[int | str, Field(json_schema_extra={"x-kubernetes-int-or-string": True,
                                                                     "maxLength": 64})]]


def _requests_within_limits(r: Resources) -> bool:
    if not r.requests or not r.limits:
        return True
    pairs = [(parse_quantity(v), parse_quantity(r.limits[k])) for k, v in r.requests.items() if k in r.limits]
    return all(req is None or lim is None or req <= lim for req, lim in pairs)


def _extended_in_limits(r: Resources) -> bool:
    requests, limits = r.requests or {}, r.limits or {}
    return all(k in limits and None is not parse_quantity(limits[k]) == parse_quantity(v)
               for k, v in requests.items() if _EXTENDED in k)


_Q = "quantity(string({}))"


class Resources(_Model):
    RULES = (
        Rule("!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits) || "
             f"!isQuantity(string(self.requests[k])) || !isQuantity(string(self.limits[k])) || "
             f"{_Q.format('self.requests[k]')}.compareTo({_Q.format('self.limits[k]')}) <= 0)",
             _requests_within_limits,
             "model.resources: a request must not exceed its limit (e.g. requests.memory 512Mi with limits.memory "
             "2Gi): lower the request or raise the limit"),
        Rule("!has(self.requests) || self.requests.all(k, !k.contains('/') || (has(self.limits) && k in self.limits "
             f"&& isQuantity(string(self.requests[k])) && isQuantity(string(self.limits[k])) && "
             f"{_Q.format('self.requests[k]')}.compareTo({_Q.format('self.limits[k]')}) == 0))",
             _extended_in_limits,
             "model.resources: an extended resource such as nvidia.com/gpu cannot be overcommitted: set it in "
             "limits, and in requests only with the same value"),
    )

    requests: Annotated[Quantities, _quantities("requests")] | None = Field(
        default=None, description="Container resource requests, e.g. {cpu: 500m, memory: 512Mi}.")
    limits: Annotated[Quantities, _quantities("limits")] | None = Field(
        default=None, description="Container resource limits, e.g. {memory: 1Gi}.")

    def has(self, resource: str) -> bool:
        """Is `resource` requested? Kubernetes takes the limit as the request when only a limit is set."""
        return resource in (self.requests or {}) or resource in (self.limits or {})


# Env names the operator sets itself (see resources/deployment.py): BENTOML_PORT from model.port
# (the image's entrypoint copies PORT over it), and the pod's identity.
RESERVED_ENV_NAMES = ("BENTOML_PORT", "PORT", "MODELDEPLOY_NAME", "MODELDEPLOY_TRACK", "MODELDEPLOY_REVISION")
# `bentoml serve --port/-p` in model.args: the server would listen where probes and the Service do not look.
_PORT_ARG = r"^(--port(=|$)|-p)"
_PORT_ARGS = _py_regex(_PORT_ARG)


class ModelSpec(_Model):
    RULES = (
        Rule(f"!has(self.env) || self.env.all(e, !(e.name in {_cel_list(RESERVED_ENV_NAMES)}))",
             lambda m: not any(e.name in RESERVED_ENV_NAMES for e in m.env),
             "model.env must not set BENTOML_PORT or PORT (use model.port) nor MODELDEPLOY_NAME, "
             "MODELDEPLOY_TRACK or MODELDEPLOY_REVISION (set by the operator)"),
        Rule("!has(self.env) || self.env.all(e, self.env.exists_one(f, f.name == e.name))",
             lambda m: len({e.name for e in m.env}) == len(m.env),
             "model.env: each name may appear only once (the Deployment would be refused): remove or rename the "
             "repeated entry"),
        Rule(f"!has(self.args) || self.args.all(a, !a.matches({lit(_PORT_ARG)}))",
             lambda m: not any(_PORT_ARGS.search(a) for a in m.args),
             "model.args must not set --port or -p: set model.port instead (the operator passes it to the server "
             "as BENTOML_PORT and points the probes and the Service at it)"),
    )

    image: Annotated[str, checked(IMAGE_RULE, maxLength=512)] = Field(
        description="Container image built from a Bento (`bentoml containerize`).")
    bento: str | None = Field(default=None, max_length=256,
                              description="The Bento tag (name:version), shown in status and labels.")
    port: int = Field(default=3000, ge=1, le=65535,
                      description="Port the BentoML server listens on (BentoML's default is 3000).")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Kubernetes imagePullPolicy for the model container.")
    image_pull_secrets: list[Annotated[str, dns_subdomain("model.imagePullSecrets[]", "Secret")]] = Field(
        default_factory=list, max_length=16, description="Names of Secrets used to pull the image.")
    env: list[EnvVar] = Field(default_factory=list, max_length=128,
                              description="Environment variables for the model server.")
    resources: Resources = Field(
        default_factory=lambda: Resources(requests={"cpu": "250m", "memory": "512Mi"}, limits={"memory": "2Gi"}),
        description="Container resources. Set cpu requests when autoscaling on CPU.")
    args: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=64,
        description="Extra arguments for the container's entrypoint (not --port: use model.port).")
    service_account_name: Annotated[str, dns_subdomain("model.serviceAccountName", "ServiceAccount")] | None = Field(
        default=None, description="ServiceAccount for the model pods.")
    run_as_user: int | None = Field(
        default=None, ge=1, le=2147483647,
        description="Numeric user id the model server runs as (pod runAsUser). Default 1034, the uid of the "
                    "`bentoml` user in images built by `bentoml containerize`; set it for images built with "
                    "another user. Never 0: model pods run as non-root.")
    run_as_group: int | None = Field(
        default=None, ge=0, le=2147483647,
        description="Numeric group id of the model server (pod runAsGroup and fsGroup). Default 1034, the gid "
                    "of the `bentoml` group in images built by `bentoml containerize`.")


# --------------------------------------------------------------------------------------------
# spec.autoscaling
# --------------------------------------------------------------------------------------------
class Autoscaling(_Model):
    RULES = (Rule("self.minReplicas <= self.maxReplicas", lambda a: a.min_replicas <= a.max_replicas,
                  "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"),)

    enabled: bool = Field(default=True, description="Create a HorizontalPodAutoscaler for the stable Deployment.")
    min_replicas: int = Field(default=1, ge=1, le=1000, description="Lower bound for the HPA.")
    max_replicas: int = Field(ge=1, le=1000, description="Upper bound for the HPA.")
    target_cpu_utilization_percentage: int | None = Field(
        default=80, ge=1, le=100, description="Average CPU utilisation target (% of requests).")
    target_memory_utilization_percentage: int | None = Field(
        default=None, ge=1, le=100, description="Average memory utilisation target (% of requests).")

    @property
    def targets_cpu(self) -> bool:
        """Does the HPA scale on CPU? An HPA without metrics defaults to CPU (80 %)."""
        return self.target_cpu_utilization_percentage is not None or self.target_memory_utilization_percentage is None


# --------------------------------------------------------------------------------------------
# spec.rollout
# --------------------------------------------------------------------------------------------
def _same(field: str) -> str:
    """CEL: parentRefs a and b agree on an optional field (both unset, or equal). A field named like a CEL
    keyword is spelled __name__ in Kubernetes CEL (plain `namespace` is untyped: its cost is unbounded)."""
    f = "__namespace__" if field == "namespace" else field
    return f"has(a.{f}) == has(b.{f}) && (!has(a.{f}) || a.{f} == b.{f})"


class ParentRef(_Model):
    name: Annotated[str, dns_subdomain("gatewayAPI.parentRefs[].name", "Gateway")] = Field(
        description="Gateway name.")
    namespace: Annotated[str, dns_label("gatewayAPI.parentRefs[].namespace", "namespace")] | None = Field(
        default=None, description="Gateway namespace (defaults to the route's).")
    section_name: Annotated[str, dns_subdomain("gatewayAPI.parentRefs[].sectionName", "listener")] | None = Field(
        default=None, description="Listener name on the Gateway.")

    @property
    def gateway(self) -> tuple[str, str]:
        return self.name, self.namespace or ""


def _parents_distinct(g: GatewayAPIRouter) -> bool:
    keys = [(*r.gateway, r.section_name or "") for r in g.parent_refs]
    gateways = [r.gateway for r in g.parent_refs]
    return len(set(keys)) == len(keys) and all(r.section_name or gateways.count(r.gateway) == 1
                                                for r in g.parent_refs)


# Gateway API's Hostname: a DNS name in lowercase, optionally `*.` first; no port, no IP.
_GATEWAY_HOSTNAME_RE = rf"^(\*\.)?{_SUBDOMAIN}$"


class GatewayAPIRouter(_Model):
    RULES = (
        Rule(f"self.parentRefs.all(a, self.parentRefs.exists_one(b, b.name == a.name && {_same('namespace')} && "
             f"{_same('sectionName')}) && (has(a.sectionName) || self.parentRefs.exists_one(b, b.name == a.name && "
             f"{_same('namespace')})))",
             _parents_distinct,
             "gatewayAPI.parentRefs: a Gateway named twice needs a different sectionName on each reference"),
    )

    parent_refs: list[ParentRef] = Field(min_length=1, max_length=8,
                                         description="Gateways the HTTPRoute attaches to.")
    hostnames: list[Annotated[str, checked(matching(
        _GATEWAY_HOSTNAME_RE, "gatewayAPI.hostnames[] must be a DNS name in lowercase, optionally starting with "
                              "'*.', without port or scheme, e.g. room-price.example.com (at most 253 characters)",
        253), maxLength=253)]] = Field(default_factory=list, max_length=16, description="HTTPRoute hostnames.")


# Istio's host syntax (ValidateWildcardDomain): DNS labels, a wildcard only as the whole first label, or `*`.
_ISTIO_LABEL = "[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?"
_ISTIO_HOST_RE = rf"^(\*|(\*\.)?{_ISTIO_LABEL}(\.{_ISTIO_LABEL})*)$"
# Istio's gateway references: `mesh`, <name>, or <namespace>/<name>.
_ISTIO_GATEWAY_RE = rf"^(mesh|{_LABEL}/{_LABEL}|{_SUBDOMAIN})$"


class IstioRouter(_Model):
    RULES = (
        Rule("!('*' in self.hosts) || (self.gateways.size() > 0 && !('mesh' in self.gateways))",
             lambda i: "*" not in i.hosts or (bool(i.gateways) and "mesh" not in i.gateways),
             "istio.hosts: '*' is only allowed with istio.gateways naming ingress Gateways (Istio refuses it for "
             "mesh traffic): name the hosts, or add the Gateways"),
    )

    hosts: list[Annotated[str, checked(matching(
        _ISTIO_HOST_RE, "istio.hosts[] must be a host name such as room-price or room-price.example.com, optionally "
                        "starting with '*.', or '*' (no port, scheme or path; at most 255 characters)", 255),
        maxLength=255)]] = Field(default_factory=list, max_length=16,
                                  description="VirtualService hosts (defaults to the Service's name).")
    gateways: list[Annotated[str, checked(matching(
        _ISTIO_GATEWAY_RE, "istio.gateways[] must be mesh, a Gateway name or <namespace>/<name>, e.g. "
                           "istio-ingress/public-gateway (at most 253 characters)", 253), maxLength=253)]] = Field(
        default_factory=list, max_length=8, description="Istio Gateways (defaults to the mesh).")


class ReplicasRouter(_Model):
    """Plain Kubernetes: one Service over stable and canary pods; weight = replica ratio."""


class TrafficRouter(_Model):
    RULES = (Rule("[has(self.replicas), has(self.gatewayAPI), has(self.istio)].filter(x, x).size() == 1",
                  lambda t: [t.replicas, t.gateway_api, t.istio].count(None) == 2,
                  "canary.trafficRouter: set exactly one of replicas, gatewayAPI or istio"),)

    replicas: ReplicasRouter | None = Field(default=None, description="Weight by replica ratio (default).")
    gateway_api: GatewayAPIRouter | None = Field(default=None, alias="gatewayAPI",
                                                 description="Weighted HTTPRoute backendRefs (Gateway API).")
    istio: IstioRouter | None = Field(default=None, description="Weighted Istio VirtualService routes.")

    @property
    def kind(self) -> str:
        if self.gateway_api is not None:
            return "gatewayAPI"
        if self.istio is not None:
            return "istio"
        return "replicas"


class Canary(_Model):
    RULES = (
        Rule("self.steps.all(s, s >= 1 && s <= 100)", lambda c: all(1 <= s <= 100 for s in c.steps),
             "canary.steps: every step must be within 1..100 (percent)"),
        Rule("self.steps.isSorted() && self.steps.all(s, self.steps.exists_one(t, t == s))",
             lambda c: all(a < b for a, b in zip(c.steps, c.steps[1:], strict=False)),
             "canary.steps must be strictly increasing, e.g. [10, 25, 50]"),
    )

    steps: list[int] = Field(default_factory=lambda: [10, 25, 50], min_length=1, max_length=20,
                             description="Canary traffic percentages, strictly increasing, each in 1..100. "
                                         "Promotion follows the last healthy step.")
    interval: Annotated[str, duration("canary.interval")] = Field(
        default="30s", description="Time at each step; also the analysis window. A Prometheus duration "
                                   "greater than zero, e.g. 30s, 1m30s, 2m.")
    traffic_router: TrafficRouter = Field(default_factory=lambda: TrafficRouter(replicas=ReplicasRouter()),
                                          description="How traffic is split. Exactly one of the routers.")


class SecretRef(_Model):
    name: Annotated[str, dns_subdomain("analysis.prometheus.secretRef.name", "Secret")] = Field(
        description="Secret name in the ModelDeployment's namespace.")


class PrometheusProvider(_Model):
    address: Annotated[str, Checked(ADDRESS_RULES, (('maxLength', 512),))] = Field(
        description="Prometheus base URL, e.g. http://prometheus.monitoring:9090 (no user info, query or fragment; "
                    "the operator's allow-list may restrict it further).")
    timeout: Annotated[str, duration("analysis.prometheus.timeout")] = Field(
        default="5s", description="Query timeout. A Prometheus duration greater than zero, e.g. 5s, 1m.")
    secret_ref: SecretRef | None = Field(
        default=None, description="Secret with optional keys: token (bearer), username/password "
                                  "(basic auth), ca.crt (TLS CA). It must carry the label "
                                  "modeldeploy.io/prometheus-credentials=true (and must not be a "
                                  "service-account token), else the object is Degraded and nothing is sent.")
    insecure_skip_verify: bool = Field(default=False, description="Skip TLS verification (not recommended).")


BUILTIN_METRICS = ("error-rate", "latency-p50", "latency-p90", "latency-p99", "request-rate", "prediction-drift",
                   "input-drift")
# Built-ins that compare the canary's distribution with the stable's (population stability index).
DRIFT_METRICS = ("prediction-drift", "input-drift")
# Their default threshold when `max` is not set: PSI above 0.25 is the usual "significant shift", below
# 0.1 "no shift"; 0.2 sits between, so a model that really changed is caught before it is blatant.
DEFAULT_DRIFT_THRESHOLD = 0.2
# The variables of a custom query (metrics/queries.py renders them); any other {{ ... }} would stay in
# the PromQL literally, match nothing, and roll the canary back for "no data" far from the typo.
TEMPLATE_VARIABLES = ("namespace", "name", "track", "revision", "interval")
TEMPLATE_VARIABLE_RE = r"\{\{[ \t]*(" + "|".join(TEMPLATE_VARIABLES) + r")[ \t]*\}\}"
_OPENING_RE = r"\{\{"
_BUILTINS = _cel_list(BUILTIN_METRICS)
_DRIFTS = _cel_list(DRIFT_METRICS)


def _known_variables_only(query: str) -> bool:
    return len(re.findall(_OPENING_RE, query)) == len(re.findall(TEMPLATE_VARIABLE_RE, query))


class MetricCheck(_Model):
    RULES = (
        Rule(f"has(self.min) || has(self.max) || has(self.maxIncrease) || has(self.maxRatio) || self.name in {_DRIFTS}",
             lambda m: m.min is not None or m.max is not None or m.max_increase is not None
             or m.max_ratio is not None or m.name in DRIFT_METRICS,
             "analysis.metrics[]: set min and/or max, or maxIncrease (error-rate) / maxRatio (latency-pNN) "
             "relative to the stable (a check without a threshold can never fail)"),
        Rule("!has(self.maxIncrease) || self.name == 'error-rate'",
             lambda m: m.max_increase is None or m.name == "error-rate",
             "analysis.metrics[]: maxIncrease compares the canary's error rate with the stable's and only applies "
             "to the built-in error-rate check"),
        Rule("!has(self.maxRatio) || self.name.startsWith('latency-p')",
             lambda m: m.max_ratio is None or m.name.startswith("latency-p"),
             "analysis.metrics[]: maxRatio compares the canary's latency quantile with the stable's and only "
             "applies to the built-in latency-p50, latency-p90 and latency-p99 checks"),
        Rule(f"!(self.name in {_DRIFTS}) || (!has(self.min) && (!has(self.max) || self.max > 0.0))",
             lambda m: m.name not in DRIFT_METRICS or (m.min is None and (m.max is None or m.max > 0)),
             "analysis.metrics[]: prediction-drift and input-drift take only max, the highest population "
             f"stability index tolerated (> 0; default {DEFAULT_DRIFT_THRESHOLD})"),
        Rule("!has(self.min) || !has(self.max) || self.min <= self.max",
             lambda m: m.min is None or m.max is None or m.min <= m.max,
             "analysis.metrics[]: min must be less than or equal to max (no value could pass)"),
        Rule(f"has(self.query) || self.name in {_BUILTINS}", lambda m: m.query is not None or m.name in BUILTIN_METRICS,
             "analysis.metrics[]: a check of your own (not one of " + ", ".join(BUILTIN_METRICS) + ") needs a "
             "query: PromQL that returns one number"),
        Rule(f"!(self.name in {_BUILTINS}) || !has(self.query)",
             lambda m: m.name not in BUILTIN_METRICS or m.query is None,
             "analysis.metrics[]: " + ", ".join(BUILTIN_METRICS) + " are built-in checks and take no query (a query "
             "would silently replace the built-in): give your query a name of its own, e.g. my-error-rate"),
        Rule("self.name != 'error-rate' || has(self.query) || "
             "((!has(self.max) || (self.max >= 0.0 && self.max <= 1.0)) && (!has(self.min) || self.min >= 0.0))",
             lambda m: m.name != "error-rate" or m.query is not None or (
                 (m.max is None or 0 <= m.max <= 1) and (m.min is None or m.min >= 0)),
             "analysis.metrics[]: error-rate is a ratio: thresholds must be within 0..1 (e.g. max: 0.01 for 1%)"),
        Rule("!self.name.startsWith('latency-') || has(self.query) || "
             "((!has(self.max) || self.max > 0.0) && (!has(self.min) || self.min >= 0.0))",
             lambda m: not m.name.startswith("latency-") or m.query is not None or (
                 (m.max is None or m.max > 0) and (m.min is None or m.min >= 0)),
             "analysis.metrics[]: latency thresholds are seconds and must be positive (e.g. max: 0.5)"),
    )

    name: Annotated[str, dns_label("analysis.metrics[].name", "check")] = Field(
        description="A built-in (error-rate, latency-p50, latency-p90, latency-p99, request-rate, prediction-drift, "
                    "input-drift) or your own name with a query.")
    query: Annotated[str, checked(
        matching(r"[^ \t\r\n]", "analysis.metrics[].query must not be empty: give a PromQL expression that returns "
                                "one number"),
        Rule(f"self.findAll({lit(_OPENING_RE)}).size() == self.findAll({lit(TEMPLATE_VARIABLE_RE)}).size()",
             _known_variables_only,
             "analysis.metrics[].query uses an unknown template variable: the variables are "
             + ", ".join("{{ " + v + " }}" for v in TEMPLATE_VARIABLES) + " (check the spelling)"),
        maxLength=4096)] | None = Field(
        default=None, description="PromQL template; variables {{ namespace }}, {{ name }}, {{ track }}, "
                                  "{{ revision }}, {{ interval }}.")
    min: float | None = Field(default=None, description="Fail when the value is below this.")
    max: float | None = Field(default=None, description="Fail when the value is above this (prediction-drift, "
                                                        f"input-drift: the PSI; default {DEFAULT_DRIFT_THRESHOLD}).")
    max_increase: float | None = Field(
        default=None, ge=0, le=1,
        description="error-rate only: fail when the canary's error rate exceeds the stable's, measured over the "
                    "same window, by more than this (0.02: two points), decided by a two-proportion test at "
                    "analysis.confidence; a stable-wide incident raises both and does not fail the canary.")
    max_ratio: float | None = Field(
        default=None, ge=1, le=100,
        description="latency-pNN only: fail when the canary's quantile exceeds this times the stable's over the "
                    "same window (1.5: 50 % slower), decided by a binomial test on the canary's histogram.")

    @property
    def absolute(self) -> bool:
        """Judged by its own value against min/max (every check with a threshold but the drift checks)."""
        return self.name not in DRIFT_METRICS and (self.min is not None or self.max is not None)

    @property
    def comparison(self) -> str | None:
        """The baseline check this one asks for (its name in status), or None: the drift checks, and
        error-rate / latency-pNN with maxIncrease / maxRatio, are measured against the stable."""
        if self.name in DRIFT_METRICS:
            return self.name
        if self.max_increase is not None or self.max_ratio is not None:
            return f"{self.name}-vs-stable"
        return None

    @property
    def drift_threshold(self) -> float:
        return DEFAULT_DRIFT_THRESHOLD if self.max is None else self.max


class Analysis(_Model):
    RULES = (
        Rule("self.metrics.all(m, self.metrics.exists_one(n, n.name == m.name))",
             lambda a: len({m.name for m in a.metrics}) == len(a.metrics),
             "analysis.metrics: each check name may appear only once: merge the two checks (min and max may be "
             "set together) or rename one"),
        Rule("!has(self.prometheus) || self.metrics.size() > 0", lambda a: a.prometheus is None or bool(a.metrics),
             "analysis.prometheus is set but analysis.metrics is empty, so nothing would be measured and every step "
             "would pass on time: add checks such as {name: error-rate, max: 0.01}, or remove analysis.prometheus"),
    )

    prometheus: PrometheusProvider | None = Field(default=None, description="Where metrics are queried.")
    metrics: list[MetricCheck] = Field(default_factory=list, max_length=20,
                                       description="Checks run every interval against the canary.")
    failure_limit: int = Field(default=1, ge=1, le=100,
                               description="Failed analyses tolerated before rolling back.")
    min_requests: int = Field(default=20, ge=0, le=1_000_000,
                              description="Fewer canary requests in the window = inconclusive: hold, "
                                          "never promote.")
    inconclusive_limit: int = Field(default=10, ge=1, le=1000,
                                    description="Inconclusive analyses in a row before the canary is rolled "
                                                "back: its weight goes to 0, it is scaled down and the phase "
                                                "is Failed; the revision is not retried until spec.model "
                                                "changes.")
    error_limit: int = Field(default=3, ge=1, le=100,
                             description="Consecutive metric-provider errors before rolling back.")
    measurement_interval: Annotated[str, duration("analysis.measurementInterval")] = Field(
        default="5s",
        description="How often the canary is measured within a step (fail fast): a failure that is already "
                    "certain rolls the canary back at once instead of at the end of the step. Capped at "
                    "canary.interval; a step still passes only at its end.")
    pass_confidence: float = Field(
        default=0.8, ge=0.5, le=0.9999,
        description="Confidence a baseline check (maxIncrease, maxRatio, prediction-drift, input-drift) must reach "
                    "that the canary is within its threshold before a step passes; below it, and below "
                    "`confidence` for a failure, the analysis is Inconclusive and the step is held.")
    confidence: float = Field(
        default=0.99, ge=0.5, le=0.9999,
        description="Confidence at which a failure counts as certain (error-rate: a one-sided Wilson bound on the "
                    "canary's request counts; baseline checks: their test against the stable). Within a step it is "
                    "spread over the step's measurements, so a failure proven early ends the step at once.")


def _cel_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return lit(value)
    if isinstance(value, list):
        return "[" + ", ".join(_cel_value(v) for v in value) + "]"
    return repr(value)


def _left_at_defaults(section: str, model: type[BaseModel], names: tuple[str, ...]) -> Rule:
    """A rule that `self.<section>`'s fields `names` hold their defaults (None: unset); no message yet."""
    parts, defaults = [], {}
    for name in names:
        field = model.model_fields[name]
        default = field.get_default(call_default_factory=True)
        defaults[name] = default
        path = f"self.{section}.{field.alias or name}"
        parts.append(f"!has({path})" if default is None else f"{path}.size() == 0" if default == [] else
                     f"{path} == {_cel_value(default)}")
    return Rule(" && ".join(parts), lambda obj: all(getattr(obj, n) == d for n, d in defaults.items()), "")


_ROLLING_CANARY = _left_at_defaults("canary", Canary, ("steps", "interval"))
_ROLLING_ANALYSIS = _left_at_defaults("analysis", Analysis, tuple(Analysis.model_fields))


class Rollout(_Model):
    RULES = (
        Rule("self.strategy != 'Canary' || self.analysis.metrics.size() == 0 || has(self.analysis.prometheus)",
             lambda r: r.strategy != "Canary" or not r.analysis.metrics or r.analysis.prometheus is not None,
             "rollout.analysis.prometheus is required when analysis metrics are set: add "
             "analysis.prometheus.address, e.g. http://prometheus.monitoring:9090"),
        Rule(f"self.strategy != 'Rolling' || ({_ROLLING_CANARY.cel})",
             lambda r: r.strategy != "Rolling" or _ROLLING_CANARY.check(r.canary),
             "rollout.canary.steps and rollout.canary.interval only apply to strategy Canary (Rolling would ignore "
             "them): remove them, or set rollout.strategy: Canary"),
        Rule(f"self.strategy != 'Rolling' || ({_ROLLING_ANALYSIS.cel})",
             lambda r: r.strategy != "Rolling" or _ROLLING_ANALYSIS.check(r.analysis),
             "rollout.analysis only applies to strategy Canary (Rolling runs no analysis and would ignore it): "
             "remove it, or set rollout.strategy: Canary"),
    )

    strategy: Literal["Canary", "Rolling"] = Field(
        default="Canary", description="Canary: step traffic with analysis. Rolling: plain rolling update.")
    canary: Canary = Field(default_factory=Canary, description="Canary steps and traffic routing.")
    analysis: Analysis = Field(default_factory=Analysis, description="Metric checks for the canary.")


class ServiceSpec(_Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(default="ClusterIP",
                                                                   description="Service type.")
    port: int = Field(default=80, ge=1, le=65535, description="Service port (targets model.port).")


_AUTOSCALING_ON = "has(self.autoscaling) && self.autoscaling.enabled"
_TARGETS_CPU = ("(has(self.autoscaling.targetCpuUtilizationPercentage) || "
                "!has(self.autoscaling.targetMemoryUtilizationPercentage))")


def _requested(resource: str) -> str:
    r = "self.model.resources"
    return f"((has({r}.requests) && '{resource}' in {r}.requests) || (has({r}.limits) && '{resource}' in {r}.limits))"


class ModelDeploymentSpec(_Model):
    RULES = (
        Rule(f"!has(self.replicas) || !({_AUTOSCALING_ON})", lambda s: s.replicas is None or not s.autoscaling_on,
             "replicas is ignored while autoscaling is enabled (the HorizontalPodAutoscaler sets the count between "
             "autoscaling.minReplicas and maxReplicas): remove replicas, or set autoscaling.enabled: false"),
        Rule(f"!({_AUTOSCALING_ON}) || !{_TARGETS_CPU} || {_requested('cpu')}",
             lambda s: not s.autoscaling_on or not s.autoscaling.targets_cpu or s.model.resources.has("cpu"),
             "autoscaling on CPU needs a CPU request, its utilisation is measured against it: set "
             "model.resources.requests.cpu (e.g. 500m)"),
        Rule(f"!({_AUTOSCALING_ON}) || !has(self.autoscaling.targetMemoryUtilizationPercentage) || "
             f"{_requested('memory')}",
             lambda s: not s.autoscaling_on or s.autoscaling.target_memory_utilization_percentage is None
             or s.model.resources.has("memory"),
             "autoscaling.targetMemoryUtilizationPercentage needs a memory request, its utilisation is measured "
             "against it: set model.resources.requests.memory (e.g. 512Mi)"),
    )

    model: ModelSpec = Field(description="The model server: image built from a Bento, port, env, resources.")
    replicas: int | None = Field(default=None, ge=0, le=1000,
                                 description="Stable replicas when autoscaling is off (default 1); not together "
                                             "with autoscaling.")
    autoscaling: Autoscaling | None = Field(default=None,
                                            description="HorizontalPodAutoscaler (autoscaling/v2) settings.")
    rollout: Rollout = Field(default_factory=Rollout, description="How a new model version is rolled out.")
    service: ServiceSpec = Field(default_factory=ServiceSpec, description="The Service in front of the model.")
    paused: bool = Field(default=False, description="Hold the rollout where it is (no steps, no promotion).")
    progress_deadline_seconds: int = Field(default=600, ge=10, le=86400,
                                           description="A rollout that makes no progress this long is "
                                                       "Degraded.")
    revision_history_limit: int = Field(default=10, ge=1, le=100,
                                        description="Revisions kept in status.history.")

    @property
    def desired_replicas(self) -> int:
        return 1 if self.replicas is None else self.replicas

    @property
    def autoscaling_on(self) -> bool:
        return self.autoscaling is not None and self.autoscaling.enabled


# --------------------------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------------------------
class Phase(StrEnum):
    """Documented lifecycle: Pending -> Progressing -> Healthy; Degraded on errors;
    Paused by the user; RolledBack / Failed after a canary."""

    PENDING = "Pending"
    PROGRESSING = "Progressing"
    HEALTHY = "Healthy"
    PAUSED = "Paused"
    DEGRADED = "Degraded"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


class _StatusModel(_Model):
    """Status is written by us; tolerate fields from newer operator versions when reading."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(_StatusModel):
    type: str = Field(description="Ready, Available, Progressing, Degraded or StepsApproximate.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="CamelCase reason.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str | None = Field(default=None, description="RFC 3339 time of the last change.")
    observed_generation: int | None = Field(default=None, description="Generation this was computed for.")


# --------------------------------------------------------------------------------------------
# The model card of a revision
# --------------------------------------------------------------------------------------------
# The pipeline's card.json (bento/modeldeploy_model: name, version, kind, runtime, dataset, data_hash,
# evaluation.metrics.test, gate, export.parity) is several kilobytes (feature statistics, latency, package
# versions); status keeps only what says which model this is and why it was allowed to ship. The card
# comes from the model server (GET /metadata), i.e. from whoever built the image: every string is cut to
# CARD_TEXT_MAX characters, the gate to CARD_CHECKS_MAX checks, and a number that is not finite is null.
CARD_TEXT_MAX = 128
CARD_CHECKS_MAX = 8
CARD_SUMMARY_MAX = 160


def _text(value: Any, limit: int = CARD_TEXT_MAX) -> str | None:
    return None if value is None else str(value)[:limit]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class GateCheck(_StatusModel):
    metric: str = Field(description="Metric on the test split, e.g. r2 or rmse.")
    op: str = Field(description="How the value is compared with the threshold: >=, >, <= or <.")
    threshold: float | None = Field(default=None, description="The gate's threshold.")
    value: float | None = Field(default=None, description="The model's value (null: not a finite number).")
    passed: bool = Field(description="Whether the value met the threshold.")


class Gate(_StatusModel):
    passed: bool = Field(description="Whether the model passed its quality gate.")
    checks: list[GateCheck] = Field(default_factory=list, max_length=CARD_CHECKS_MAX,
                                    description="Each threshold of the gate with the model's value.")


class Parity(_StatusModel):
    runtime: str = Field(description="The exported runtime served (onnx, onnx-int8).")
    max_abs_diff: float | None = Field(default=None, description="Largest absolute prediction difference from the "
                                                                 "original model on the test split.")
    passed: bool = Field(description="Whether the export stayed within tolerance.")


class ModelCard(_StatusModel):
    """What the pipeline recorded about the model a revision serves (its card.json, compacted)."""

    name: str | None = Field(default=None, description="Model name.")
    version: str | None = Field(default=None, description="Model version (a hash of the model file).")
    kind: str | None = Field(default=None, description="Model kind selected by the pipeline, e.g. ridge or mlp.")
    framework: str | None = Field(default=None, description="Training framework: sklearn or keras.")
    runtime: str | None = Field(default=None, description="Serving runtime: sklearn, keras, onnx or onnx-int8.")
    dataset: str | None = Field(default=None, description="Training data set.")
    data_hash: str | None = Field(default=None, description="Fingerprint of the training data.")
    gate: Gate | None = Field(default=None, description="The quality gate on the test split.")
    r2: float | None = Field(default=None, description="R² on the test split.")
    rmse: float | None = Field(default=None, description="RMSE on the test split.")
    parity: Parity | None = Field(default=None, description="Parity of the served export with the original model "
                                                            "(null: the native model is served).")
    summary: str = Field(default="", description="One line: kind, version, test metrics, gate.")

    @classmethod
    def from_card(cls, card: Any) -> ModelCard:
        """The compact card of a pipeline card.json (a dict); whatever is missing or malformed is null."""
        card = _dict(card)
        test = _dict(_dict(_dict(card.get("evaluation")).get("metrics")).get("test"))
        gate_in = card.get("gate")
        gate = None
        if isinstance(gate_in, dict):
            checks = [GateCheck(metric=_text(c.get("metric")) or "?", op=_text(c.get("op"), 2) or "?",
                                threshold=_number(c.get("threshold")), value=_number(c.get("value")),
                                passed=c.get("passed") is True)
                      for c in gate_in.get("checks") or [] if isinstance(c, dict)]
            gate = Gate(passed=gate_in.get("passed") is True, checks=checks[:CARD_CHECKS_MAX])
        runtime = _text(card.get("runtime"))
        parity = None
        for p in _dict(card.get("export")).get("parity") or []:
            if isinstance(p, dict) and runtime is not None and p.get("runtime") == runtime:
                parity = Parity(runtime=runtime, max_abs_diff=_number(p.get("max_abs_diff")),
                                passed=p.get("passed") is True)
        out = cls(name=_text(card.get("name")), version=_text(card.get("version")), kind=_text(card.get("kind")),
                  framework=_text(card.get("framework")), runtime=runtime, dataset=_text(card.get("dataset")),
                  data_hash=_text(card.get("data_hash")), gate=gate, r2=_number(test.get("r2")),
                  rmse=_number(test.get("rmse")), parity=parity)
        out.summary = out.line()
        return out

    def line(self) -> str:
        """E.g. "ridge 5ff0e122 onnx R²=0.991 RMSE=12.5 gate passed"."""
        parts = [p for p in (self.kind, (self.version or "")[:8] or None, self.runtime) if p]
        if self.r2 is not None:
            parts.append(f"R²={self.r2:.3g}")
        if self.rmse is not None:
            parts.append(f"RMSE={self.rmse:.3g}")
        if self.gate is not None:
            parts.append("gate passed" if self.gate.passed else "gate FAILED")
        return " ".join(parts)[:CARD_SUMMARY_MAX]


class Revision(_StatusModel):
    image: str = Field(description="Container image.")
    bento: str | None = Field(default=None, description="Bento tag.")
    hash: str = Field(description="Hash of the pod template inputs (spec.model).")
    card: ModelCard | None = Field(default=None, description="The model card of this revision, read from one of its "
                                                             "ready pods (GET /metadata); null until then.")


class AnalysisRecord(_StatusModel):
    metric: str = Field(description="Metric check name.")
    value: float | None = Field(default=None, description="Measured value (null: no data or error).")
    min: float | None = Field(default=None, description="Lower threshold, if any.")
    max: float | None = Field(default=None, description="Upper threshold, if any.")
    verdict: Literal["Pass", "Fail", "Inconclusive", "Error"] = Field(description="Pass, Fail, Inconclusive "
                                                                               "or Error.")
    message: str = Field(default="", description="Why this verdict.")
    time: str = Field(description="RFC 3339 time of the analysis.")
    confidence: float | None = Field(default=None, description="Confidence the verdict reached (statistical "
                                                               "checks), e.g. 0.99.")
    baseline: float | None = Field(default=None, description="Baseline checks: the stable's value over the same "
                                                             "window (error rate, latency quantile).")
    early: bool = Field(default=False, description="Decided by an in-step measurement before the step's end.")


class ManualRequest(_StatusModel):
    action: Literal["promote", "abort"] = Field(description="promote or abort.")
    value: str = Field(default="", description="The annotation's value: a canary revision hash binds the request "
                                               "to that canary; any other value to the canary running when it "
                                               "was seen.")
    revision: str | None = Field(default=None, description="The canary revision it acted on (null: ignored).")
    result: Literal["Applied", "Ignored"] = Field(description="Applied or Ignored.")
    reason: str = Field(default="", description="Why.")
    time: str = Field(description="RFC 3339 time it was handled.")


class HistoryEntry(_StatusModel):
    revision: Revision = Field(description="The revision.")
    result: str = Field(description="Superseded (served as stable, then replaced), Cancelled (a canary replaced "
                                    "before it finished), RolledBack or Failed.")
    reason: str = Field(default="", description="Why it ended so.")
    time: str = Field(description="RFC 3339 time it ended so.")


TIMELINE_KEPT = 30
TimelineVerdict = Literal["Started", "Pass", "Fail", "Inconclusive", "Error", "Promoted", "RolledBack", "Failed"]


class TimelineEntry(_StatusModel):
    step: int = Field(description="The canary step (1-based) this entry is about.")
    weight: int = Field(description="Percent of traffic the canary had (as achieved) at that moment.")
    verdict: TimelineVerdict = Field(
        description="Started (the canary began), an analysis verdict (Pass, Fail, Inconclusive, Error), or how "
                    "the canary ended (Promoted, RolledBack, Failed).")
    time: str = Field(description="RFC 3339 time.")


class ModelDeploymentStatus(_StatusModel):
    phase: Phase = Field(default=Phase.PENDING, description="Pending, Progressing, Healthy, Paused, "
                                                            "Degraded, RolledBack or Failed.")
    message: str = Field(default="", description="Why the object is in this phase.")
    observed_generation: int | None = Field(default=None, description="metadata.generation last acted on.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Available, Progressing, "
                                                                          "Degraded; StepsApproximate while "
                                                                          "whole pods miss canary steps.")
    stable: Revision | None = Field(default=None, description="The revision serving stable traffic.")
    stable_model: ModelSpec | None = Field(
        default=None, description="The full model spec of the stable revision, so the stable Deployment can be "
                                  "kept (or rebuilt) while a canary of a newer spec runs.")
    canary: Revision | None = Field(default=None, description="The revision under analysis, if any.")
    canary_weight: int = Field(default=0, description="Percent of traffic the canary receives (as achieved: with "
                                                      "the replicas router, by ready pod ratio).")
    current_step: int = Field(default=0, description="Index into canary.steps (0 = none yet).")
    failed_checks: int = Field(default=0, description="Failed analyses during this canary.")
    inconclusive_checks: int = Field(default=0, description="Inconclusive analyses in a row.")
    provider_errors: int = Field(default=0, description="Metric-provider errors in a row.")
    step_started_at: str | None = Field(default=None, description="RFC 3339 time the current step began.")
    step_ready_at: str | None = Field(default=None, description="RFC 3339 time the current step's analysis window "
                                                                "began (the canary's pods ready at its size).")
    probe_failures: int = Field(default=0, description="In-step measurements in a row that failed a check "
                                                       "judged by its value (two in a row fail the step early).")
    last_request: ManualRequest | None = Field(default=None, description="The last promote/abort request "
                                                                         "handled, and what came of it.")
    handled_requests: list[str] = Field(
        default_factory=list, description="Promote/abort requests handled (applied or ignored) whose annotations "
                                          "are being removed, as annotation=value: one still on the object is that "
                                          "request left behind (the operator stopped before removing it) and is "
                                          "not acted on again. Emptied once the annotations are gone.")
    routing: list[str] = Field(default_factory=list, description="Routing objects this operator created "
                                                                 "(Kind/name), so a router switch removes them.")
    failed_revisions: list[str] = Field(default_factory=list, description="Hashes not retried until the "
                                                                          "spec changes.")
    last_analysis: list[AnalysisRecord] = Field(default_factory=list, description="Most recent analyses, "
                                                                                  "newest first.")
    history: list[HistoryEntry] = Field(default_factory=list, description="Past revisions, newest first.")
    timeline: list[TimelineEntry] = Field(
        default_factory=list, max_length=TIMELINE_KEPT,
        description=f"The current (or last) canary, oldest first: its start, each analysis verdict with the step "
                    f"and the traffic share, and how it ended (the last {TIMELINE_KEPT} entries).")
    replicas: int = Field(default=0, description="Pods of the stable Deployment.")
    ready_replicas: int = Field(default=0, description="Ready pods of the stable Deployment.")
    selector: str = Field(default="", description="Label selector of the stable pods (scale subresource).")

    @field_validator("stable_model", mode="wrap")
    @classmethod
    def _stable_model_as_stored(cls, value: Any, handler: Callable[[Any], Any]) -> Any:
        """The stable model was admitted under the rules of its day: read it by the schema alone when a
        newer rule refuses it, so the object stays readable and its next spec can replace it."""
        try:
            return handler(value)
        except ValidationError:
            return ModelSpec.model_validate(value, context=STORED)


# metadata.name names the Service (a DNS-1035 label: at most 63 characters, a letter first) and is the
# value of the pods' modeldeploy.io/name label; the L7 routers add the Services <name>-stable and
# <name>-canary. A longer or dotted name is accepted by the API server and then no Service can be made.
# `modeldeploy manifest` checks --name with NAME_RULE.
NAME_RULE = matching(r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
                     "metadata.name must be a valid Service name, as it names the model's Service: lowercase "
                     "letters, digits and '-', starting with a letter, ending with a letter or digit, at most 63 "
                     "characters", 63)


def _name(md: ModelDeployment) -> str:
    return str(md.metadata.get("name") or "")


class ModelDeployment(_Model):
    """A whole object as the operator sees it (metadata kept as a plain dict)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    RULES = (
        Rule("!has(self.metadata.name) || " + NAME_RULE.cel.replace("self", "self.metadata.name"),
             lambda md: not _name(md) or NAME_RULE.check(_name(md)), NAME_RULE.message, ".metadata"),
        Rule("!has(self.metadata.name) || size(self.metadata.name) <= 56 || "
             "has(self.spec.rollout.canary.trafficRouter.replicas)",
             lambda md: len(_name(md)) <= 56 or md.spec.rollout.canary.traffic_router.kind == "replicas",
             "metadata.name must be at most 56 characters with the gatewayAPI or istio router (it also names the "
             "Services <name>-stable and <name>-canary)", ".metadata"),
    )

    api_version: str = "modeldeploy.io/v1alpha1"
    kind: str = "ModelDeployment"
    metadata: dict[str, Any]
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus)

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", "default"))
