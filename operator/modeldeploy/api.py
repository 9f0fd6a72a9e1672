"""The typed ModelDeployment API: spec and status as pydantic models.

This is the single source of the schema. `modeldeploy.crd` turns these models (with their field
descriptions, bounds, defaults and the CEL rules attached below) into the CRD in `crds/`, and a
test fails when the committed CRD differs from the generated one — so Python and the API server
can never disagree about what a valid object is.

Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

# Durations are what Prometheus' model.ParseDuration accepts (PromQL range selectors use it):
# whole numbers, units y w d h m s ms, each at most once, largest first; y = 365d, w = 7d; at most
# 2^63-1 ns. Anything looser (1.5m, 30s1m) passes the API server and then fails every analysis,
# and every canary rolls back. The Python check (check_duration) and the CRD's CEL rules
# (duration_rules) accept exactly the same strings with the same messages; a field uses both, never
# _DURATION_RE as a bare pattern (it matches the empty string, which Prometheus rejects).
_DURATION_RE = r"^(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?$"
_DAY_NS = 86400 * 10**9
_UNIT_NS = {"y": 365 * _DAY_NS, "w": 7 * _DAY_NS, "d": _DAY_NS, "h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9,
            "ms": 10**6}
_UNITS = tuple(_UNIT_NS)  # largest first, the order Prometheus requires
_MAX_NS = 2**63 - 1  # Go's time.Duration
_CEL_FORMAT = "^" + "".join(f"([0-9]+{u})?" for u in _UNITS) + "$"
# For the CEL range rule: the digits of each unit's part (minutes: an `m` not followed by `s`).
_CEL_PART = {**{u: f"[0-9]+{u}" for u in _UNITS}, "m": "[0-9]+m([0-9]|$)"}


def _duration_ns(text: str) -> int | None:
    """Nanoseconds (possibly beyond _MAX_NS), or None when `text` is not Prometheus duration syntax."""
    if text == "0":  # Prometheus takes a bare 0
        return 0
    m = re.fullmatch(_DURATION_RE, text)
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


def _duration_messages(field: str) -> tuple[str, str]:
    return (f"{field} must be a Prometheus duration such as 30s, 1m30s or 2m (whole numbers; units "
            "y w d h m s ms, each at most once, largest first), greater than zero",
            f"{field} is too long: Prometheus durations stop at 292y (2^63 nanoseconds)")


def check_duration(value: str, field: str) -> str:
    """The Python side of duration_rules(field): the same strings pass, with the same messages."""
    bad_format, too_long = _duration_messages(field)
    ns = _duration_ns(value)
    if not ns:  # None (syntax) or 0
        raise ValueError(bad_format)
    if ns > _MAX_NS:
        raise ValueError(too_long)
    return value


def duration_rules(field: str) -> list[Any]:
    """CEL rules for a non-zero Prometheus duration field; `field` names it in the messages."""
    bad_format, too_long = _duration_messages(field)
    fmt = f"self.matches('{_CEL_FORMAT}')"

    def seconds(unit: str) -> str:  # the unit's number ('0' + '' when absent) in seconds
        return f"double('0' + self.find('{_CEL_PART[unit]}').find('[0-9]+')) * {_UNIT_NS[unit] / 1e9!r}"

    total = " + ".join(seconds(u) for u in _UNITS)
    # In seconds as doubles: near 2^63 ns their resolution (~2 µs) is far below the 1 ms step of durations.
    return [cel(f"{fmt} && self.matches('[1-9]')", bad_format),
            cel(f"!{fmt} || {total} <= 9223372036.854775807", too_long)]


# The Prometheus address is a base URL the operator appends /api/v1/query to, and sends the Secret's
# credentials to. User info (user:pass@) would put credentials in the spec (readable by anyone who may
# read the object) and a query or fragment would cancel the appended path (`http://evil/x#`), so all
# three are refused with a message that says what to do instead. The Python check (check_address) and
# the CRD's CEL rules (address_rules) use the same regular expressions (RE2 and Python agree on them).
_ADDRESS_FIELD = "analysis.prometheus.address"
_ADDRESS_CHECKS: tuple[tuple[str, bool, str], ...] = (
    # (regex, must match?, message)
    (r"^https?://[^/?#\x00-\x20\x7f]+([/?#][^\x00-\x20\x7f]*)?$", True,
     f"{_ADDRESS_FIELD} must be an http:// or https:// URL with a host and no spaces or control characters, "
     "e.g. http://prometheus.monitoring:9090"),
    (r"^[^/]*//[^/?#]*@", False,
     f"{_ADDRESS_FIELD} must not contain user info (user:password@): put the credentials in a Secret labelled "
     "modeldeploy.io/prometheus-credentials=true and name it in analysis.prometheus.secretRef"),
    (r"\?", False,
     f"{_ADDRESS_FIELD} must not contain a query (?...): give the base URL only (the operator appends "
     "/api/v1/query), e.g. https://prometheus.example/prefix"),
    (r"#", False,
     f"{_ADDRESS_FIELD} must not contain a fragment (#...): give the base URL only (the operator appends "
     "/api/v1/query), e.g. https://prometheus.example/prefix"),
)


def check_address(value: str) -> str:
    """The Python side of address_rules(): the same strings pass, with the same messages."""
    for regex, must, message in _ADDRESS_CHECKS:
        if bool(re.search(regex, value)) != must:
            raise ValueError(message)
    return value


def address_rules() -> list[Any]:
    """CEL rules for analysis.prometheus.address (RE2 `matches` is a search, like re.search)."""
    def lit(regex: str) -> str:  # a CEL single-quoted string literal of the regex
        return "'" + regex.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return [cel(("" if must else "!") + f"self.matches({lit(regex)})", message)
            for regex, must, message in _ADDRESS_CHECKS]


def cel(rule: str, message: str, field_path: str | None = None) -> Any:
    """One `x-kubernetes-validations` entry."""
    out: dict[str, str] = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


class _Model(BaseModel):
    """Base: camelCase aliases, unknown fields rejected (the API server prunes/rejects them too)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


IntOrString = Annotated[int | str, Field(json_schema_extra={"x-kubernetes-int-or-string": True})]


# --------------------------------------------------------------------------------------------
# spec.model
# --------------------------------------------------------------------------------------------
class SecretKeyRef(_Model):
    name: str = Field(min_length=1, description="Name of the Secret in the ModelDeployment's namespace.")
    key: str = Field(min_length=1, description="Key within the Secret.")
    optional: bool = Field(default=False, description="Do not require the Secret or key to exist.")


class ConfigMapKeyRef(_Model):
    name: str = Field(min_length=1, description="Name of the ConfigMap in the ModelDeployment's namespace.")
    key: str = Field(min_length=1, description="Key within the ConfigMap.")
    optional: bool = Field(default=False, description="Do not require the ConfigMap or key to exist.")


class EnvVarSource(_Model):
    secret_key_ref: SecretKeyRef | None = Field(default=None, description="Take the value from a Secret key.")
    config_map_key_ref: ConfigMapKeyRef | None = Field(
        default=None, description="Take the value from a ConfigMap key.")


class EnvVar(_Model):
    name: str = Field(min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
                      description="Environment variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: EnvVarSource | None = Field(default=None, description="Value taken from a Secret or ConfigMap.")


class Resources(_Model):
    requests: dict[str, IntOrString] | None = Field(
        default=None, description="Container resource requests, e.g. {cpu: 500m, memory: 512Mi}.")
    limits: dict[str, IntOrString] | None = Field(
        default=None, description="Container resource limits, e.g. {memory: 1Gi}.")


# Env names the operator sets itself (see resources/deployment.py): BENTOML_PORT from model.port
# (the image's entrypoint copies PORT over it), and the pod's identity.
RESERVED_ENV_NAMES = ("BENTOML_PORT", "PORT", "MODELDEPLOY_NAME", "MODELDEPLOY_TRACK", "MODELDEPLOY_REVISION")


class ModelSpec(_Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("!has(self.env) || self.env.all(e, !(e.name in " + str(list(RESERVED_ENV_NAMES)).replace("'", '"')
            + "))",
            "model.env must not set BENTOML_PORT or PORT (use model.port) nor MODELDEPLOY_NAME, "
            "MODELDEPLOY_TRACK or MODELDEPLOY_REVISION (set by the operator)"),
    ]})

    image: str = Field(min_length=1, max_length=512,
                       description="Container image built from a Bento (`bentoml containerize`).")
    bento: str | None = Field(default=None, max_length=256,
                              description="The Bento tag (name:version), shown in status and labels.")
    port: int = Field(default=3000, ge=1, le=65535,
                      description="Port the BentoML server listens on (BentoML's default is 3000).")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Kubernetes imagePullPolicy for the model container.")
    image_pull_secrets: list[str] = Field(default_factory=list, max_length=16,
                                          description="Names of Secrets used to pull the image.")
    env: list[EnvVar] = Field(default_factory=list, max_length=128,
                              description="Environment variables for the model server.")
    resources: Resources = Field(
        default_factory=lambda: Resources(requests={"cpu": "250m", "memory": "512Mi"}, limits={"memory": "2Gi"}),
        description="Container resources. Set cpu requests when autoscaling on CPU.")
    args: list[str] = Field(default_factory=list, max_length=64,
                            description="Extra arguments for the container's entrypoint.")
    service_account_name: str | None = Field(default=None, description="ServiceAccount for the model pods.")
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
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.minReplicas <= self.maxReplicas",
            "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"),
    ]})

    enabled: bool = Field(default=True, description="Create a HorizontalPodAutoscaler for the stable Deployment.")
    min_replicas: int = Field(default=1, ge=1, le=1000, description="Lower bound for the HPA.")
    max_replicas: int = Field(ge=1, le=1000, description="Upper bound for the HPA.")
    target_cpu_utilization_percentage: int | None = Field(
        default=80, ge=1, le=100, description="Average CPU utilisation target (% of requests).")
    target_memory_utilization_percentage: int | None = Field(
        default=None, ge=1, le=100, description="Average memory utilisation target (% of requests).")


# --------------------------------------------------------------------------------------------
# spec.rollout
# --------------------------------------------------------------------------------------------
class ParentRef(_Model):
    name: str = Field(min_length=1, description="Gateway name.")
    namespace: str | None = Field(default=None, description="Gateway namespace (defaults to the route's).")
    section_name: str | None = Field(default=None, description="Listener name on the Gateway.")


class GatewayAPIRouter(_Model):
    parent_refs: list[ParentRef] = Field(min_length=1, max_length=8,
                                         description="Gateways the HTTPRoute attaches to.")
    hostnames: list[str] = Field(default_factory=list, max_length=16, description="HTTPRoute hostnames.")


class IstioRouter(_Model):
    hosts: list[str] = Field(default_factory=list, max_length=16,
                             description="VirtualService hosts (defaults to the Service's name).")
    gateways: list[str] = Field(default_factory=list, max_length=8,
                                description="Istio Gateways (defaults to the mesh).")


class ReplicasRouter(_Model):
    """Plain Kubernetes: one Service over stable and canary pods; weight = replica ratio."""


class TrafficRouter(_Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("[has(self.replicas), has(self.gatewayAPI), has(self.istio)].filter(x, x).size() == 1",
            "trafficRouter: set exactly one of replicas, gatewayAPI or istio"),
    ]})

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
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.steps.all(s, s >= 1 && s <= 100)", "canary.steps: every step must be within 1..100 (percent)"),
        cel("self.steps.isSorted() && self.steps.all(s, self.steps.exists_one(t, t == s))",
            "canary.steps must be strictly increasing, e.g. [10, 25, 50]"),
    ]})

    steps: list[int] = Field(default_factory=lambda: [10, 25, 50], min_length=1, max_length=20,
                             description="Canary traffic percentages, strictly increasing, each in 1..100. "
                                         "Promotion follows the last healthy step.")
    interval: str = Field(default="30s", max_length=16,
                          json_schema_extra={"x-kubernetes-validations": duration_rules("canary.interval")},
                          description="Time at each step; also the analysis window. A Prometheus duration "
                                      "greater than zero, e.g. 30s, 1m30s, 2m.")
    traffic_router: TrafficRouter = Field(default_factory=lambda: TrafficRouter(replicas=ReplicasRouter()),
                                          description="How traffic is split. Exactly one of the routers.")

    @field_validator("interval")
    @classmethod
    def _interval_is_a_prometheus_duration(cls, v: str) -> str:
        return check_duration(v, "canary.interval")


class SecretRef(_Model):
    name: str = Field(min_length=1, description="Secret name in the ModelDeployment's namespace.")


class PrometheusProvider(_Model):
    address: str = Field(max_length=512, json_schema_extra={"x-kubernetes-validations": address_rules()},
                         description="Prometheus base URL, e.g. http://prometheus.monitoring:9090 (no user info, "
                                     "query or fragment; the operator's allow-list may restrict it further).")
    timeout: str = Field(default="5s", max_length=16,
                         json_schema_extra={"x-kubernetes-validations": duration_rules("analysis.prometheus.timeout")},
                         description="Query timeout. A Prometheus duration greater than zero, e.g. 5s, 1m.")
    secret_ref: SecretRef | None = Field(
        default=None, description="Secret with optional keys: token (bearer), username/password "
                                  "(basic auth), ca.crt (TLS CA). It must carry the label "
                                  "modeldeploy.io/prometheus-credentials=true (and must not be a "
                                  "service-account token), else the object is Degraded and nothing is sent.")
    insecure_skip_verify: bool = Field(default=False, description="Skip TLS verification (not recommended).")

    @field_validator("address")
    @classmethod
    def _address_is_a_base_url(cls, v: str) -> str:
        return check_address(v)

    @field_validator("timeout")
    @classmethod
    def _timeout_is_a_prometheus_duration(cls, v: str) -> str:
        return check_duration(v, "analysis.prometheus.timeout")


BUILTIN_METRICS = ("error-rate", "latency-p50", "latency-p90", "latency-p99", "request-rate")


class MetricCheck(_Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("has(self.min) || has(self.max)", "metric: set min and/or max"),
        cel("!has(self.min) || !has(self.max) || self.min <= self.max", "metric: min must be <= max"),
        cel("has(self.query) || self.name in " + str(list(BUILTIN_METRICS)).replace("'", '"'),
            "metric: a custom metric (not one of " + ", ".join(BUILTIN_METRICS) + ") needs a query"),
        cel("self.name != 'error-rate' || has(self.query) || "
            "((!has(self.max) || (self.max >= 0.0 && self.max <= 1.0)) && (!has(self.min) || self.min >= 0.0))",
            "error-rate is a ratio: thresholds must be within 0..1 (e.g. max: 0.01 for 1%)"),
        cel("!self.name.startsWith('latency-') || has(self.query) || "
            "((!has(self.max) || self.max > 0.0) && (!has(self.min) || self.min >= 0.0))",
            "latency thresholds are seconds and must be positive (e.g. max: 0.5)"),
    ]})

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                      description="A built-in (error-rate, latency-p50, latency-p90, latency-p99, "
                                  "request-rate) or your own name with a query.")
    query: str | None = Field(default=None, max_length=4096,
                              description="PromQL template; variables {{ namespace }}, {{ name }}, "
                                          "{{ track }}, {{ revision }}, {{ interval }}.")
    min: float | None = Field(default=None, description="Fail when the value is below this.")
    max: float | None = Field(default=None, description="Fail when the value is above this.")


class Analysis(_Model):
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
    measurement_interval: str = Field(
        default="5s", max_length=16,
        json_schema_extra={"x-kubernetes-validations": duration_rules("analysis.measurementInterval")},
        description="How often the canary is measured within a step (fail fast): a failure that is already "
                    "certain rolls the canary back at once instead of at the end of the step. Capped at "
                    "canary.interval; a step still passes only at its end.")
    confidence: float = Field(
        default=0.99, ge=0.5, le=0.9999,
        description="Confidence at which a failure counts as certain before the end of a step (error-rate: a "
                    "one-sided Wilson bound on the canary's request counts, spread over the step's measurements).")

    @field_validator("measurement_interval")
    @classmethod
    def _measurement_interval_is_a_prometheus_duration(cls, v: str) -> str:
        return check_duration(v, "analysis.measurementInterval")


class Rollout(_Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.strategy != 'Canary' || !has(self.analysis) || !has(self.analysis.metrics) || "
            "self.analysis.metrics.size() == 0 || has(self.analysis.prometheus)",
            "rollout.analysis.prometheus is required when analysis metrics are set"),
    ]})

    strategy: Literal["Canary", "Rolling"] = Field(
        default="Canary", description="Canary: step traffic with analysis. Rolling: plain rolling update.")
    canary: Canary = Field(default_factory=Canary, description="Canary steps and traffic routing.")
    analysis: Analysis = Field(default_factory=Analysis, description="Metric checks for the canary.")


class ServiceSpec(_Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(default="ClusterIP",
                                                                   description="Service type.")
    port: int = Field(default=80, ge=1, le=65535, description="Service port (targets model.port).")


class ModelDeploymentSpec(_Model):
    model: ModelSpec = Field(description="The model server: image built from a Bento, port, env, resources.")
    replicas: int | None = Field(default=None, ge=0, le=1000,
                                 description="Stable replicas when autoscaling is off (default 1).")
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


class Revision(_StatusModel):
    image: str = Field(description="Container image.")
    bento: str | None = Field(default=None, description="Bento tag.")
    hash: str = Field(description="Hash of the pod template inputs (spec.model).")


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
    replicas: int = Field(default=0, description="Pods of the stable Deployment.")
    ready_replicas: int = Field(default=0, description="Ready pods of the stable Deployment.")
    selector: str = Field(default="", description="Label selector of the stable pods (scale subresource).")


class ModelDeployment(_Model):
    """A whole object as the operator sees it (metadata kept as a plain dict)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

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
