"""Malformed ModelDeployments, and the words each must be refused with.

One table for both checkers of the API's rules: the API server (the CRD's CEL rules, at `kubectl
apply`: tests/integration/test_validation.py) and the Python model (`ModelDeployment.model_validate`,
which the operator and `modeldeploy manifest` use: tests/unit/test_validation_cases.py). Each body
has one defect; the message must name the field and the fix, never a regex. ACCEPTED holds the
near misses that must keep passing on both sides.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, NamedTuple

import yaml

REPO = Path(__file__).resolve().parents[1]

IMAGE = "registry.example/room-price:2f1c"
GOOD: dict[str, Any] = {
    "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "bad"},
    "spec": {"model": {"image": IMAGE}},
}
PROM = {"address": "http://prometheus.monitoring:9090"}
ERROR_RATE = {"name": "error-rate", "max": 0.01}
DIGEST = "sha256:" + "0123456789abcdef" * 4


class Case(NamedTuple):
    id: str
    body: dict[str, Any]
    message: str


DELETE = object()


def spec(**changes: Any) -> dict[str, Any]:
    """GOOD with spec fields replaced: `model__image="x"` sets spec.model.image (other model fields kept),
    `model__image=DELETE` removes it."""
    body = copy.deepcopy(GOOD)
    for path, value in changes.items():
        node = body["spec"]
        keys = path.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(keys[-1])
        else:
            node[keys[-1]] = copy.deepcopy(value)
    return body


def named(name: str, body: dict[str, Any]) -> dict[str, Any]:
    body["metadata"]["name"] = name
    return body


def env(*entries: dict[str, Any]) -> dict[str, Any]:
    return spec(model__env=list(entries))


def resources(requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None) -> dict[str, Any]:
    return spec(model__resources={k: v for k, v in (("requests", requests), ("limits", limits)) if v is not None})


def analysis(*metrics: dict[str, Any], **more: Any) -> dict[str, Any]:
    return spec(rollout={"analysis": {"prometheus": PROM, "metrics": list(metrics), **more}})


def router(**router: Any) -> dict[str, Any]:
    return spec(rollout={"canary": {"trafficRouter": router}})


def gateway(*parent_refs: dict[str, Any], hostnames: list[str] | None = None) -> dict[str, Any]:
    return router(gatewayAPI={"parentRefs": list(parent_refs) or [{"name": "public"}], "hostnames": hostnames or []})


def istio(hosts: list[str] | None = None, gateways: list[str] | None = None) -> dict[str, Any]:
    return router(istio={"hosts": hosts or [], "gateways": gateways or []})


def rolling(**rollout: Any) -> dict[str, Any]:
    return spec(rollout={"strategy": "Rolling", **rollout})


def query(text: str) -> dict[str, Any]:
    return analysis({"name": "my-check", "query": text, "max": 1})


SECRET_REF = {"secretKeyRef": {"name": "model-secrets", "key": "token"}}
CONFIG_REF = {"configMapKeyRef": {"name": "model-config", "key": "level"}}
NO_CPU = {"requests": {"memory": "512Mi"}, "limits": {"memory": "1Gi"}}

ENV_ONCE = "model.env: each name may appear only once"
VALUE_OR_FROM = "model.env[]: set either value or valueFrom, not both"
ONE_REF = "model.env[].valueFrom must set exactly one of secretKeyRef or configMapKeyRef"
ENV_NAME = "model.env[].name must start with a letter, '_', '-' or '.'"
IMAGE_REF = "model.image must be a container image reference such as registry.example/room-price:2f1c"
SERVICE_NAME = "metadata.name must be a valid Service name, as it names the model's Service"
QUANTITY = "every value must be a non-negative Kubernetes quantity such as 500m"
WITHIN_LIMIT = "model.resources: a request must not exceed its limit"
OVERCOMMIT = "an extended resource such as nvidia.com/gpu cannot be overcommitted"
ROLLING_CANARY = "rollout.canary.steps and rollout.canary.interval only apply to strategy Canary"
ROLLING_ANALYSIS = "rollout.analysis only applies to strategy Canary"
BUILTIN_QUERY = "are built-in checks and take no query (a query would silently replace the built-in)"
CHECK_ONCE = "analysis.metrics: each check name may appear only once"
VARIABLE = ("analysis.metrics[].query uses an unknown template variable: the variables are {{ namespace }}, "
            "{{ name }}, {{ track }}, {{ revision }}, {{ interval }}")
PORT_ARG = "model.args must not set --port or -p: set model.port instead"
ISTIO_HOST = "istio.hosts[] must be a host name such as room-price or room-price.example.com"
ISTIO_GATEWAY = "istio.gateways[] must be mesh, a Gateway name or <namespace>/<name>"
HOSTNAME = "gatewayAPI.hostnames[] must be a DNS name in lowercase"


def duration(field: str) -> str:
    return f"{field} must be a Prometheus duration such as 30s, 1m30s or 2m"


CASES = [
    # model.env
    Case("env-duplicate-name", env({"name": "LOG_LEVEL", "value": "info"}, {"name": "LOG_LEVEL", "value": "debug"}),
         ENV_ONCE),
    Case("env-duplicate-name-from-secret",
         env({"name": "TOKEN", "value": "x"}, {"name": "TOKEN", "valueFrom": SECRET_REF}), ENV_ONCE),
    Case("env-value-and-valueFrom", env({"name": "TOKEN", "value": "x", "valueFrom": SECRET_REF}), VALUE_OR_FROM),
    Case("env-empty-value-and-valueFrom", env({"name": "TOKEN", "value": "", "valueFrom": CONFIG_REF}), VALUE_OR_FROM),
    Case("env-valueFrom-both-refs", env({"name": "TOKEN", "valueFrom": {**SECRET_REF, **CONFIG_REF}}), ONE_REF),
    Case("env-valueFrom-neither-ref", env({"name": "TOKEN", "valueFrom": {}}), ONE_REF),
    Case("env-name-starts-with-digit", env({"name": "1LEVEL", "value": "x"}), ENV_NAME),
    Case("env-name-with-equals", env({"name": "A=B", "value": "x"}), ENV_NAME),
    Case("env-name-empty", env({"name": "", "value": "x"}), ENV_NAME),
    Case("env-reserved-port", env({"name": "PORT", "value": "8080"}), "model.env must not set BENTOML_PORT or PORT"),
    Case("env-secret-name-invalid", env({"name": "T", "valueFrom": {"secretKeyRef": {"name": "Model_Secrets",
                                                                                     "key": "t"}}}),
         "model.env[].valueFrom.secretKeyRef.name must be the name of a Secret"),
    Case("env-configmap-name-invalid", env({"name": "T", "valueFrom": {"configMapKeyRef": {"name": "model config",
                                                                                           "key": "t"}}}),
         "model.env[].valueFrom.configMapKeyRef.name must be the name of a ConfigMap"),
    Case("env-secret-key-invalid", env({"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a/b"}}}),
         "model.env[].valueFrom key must be a Secret or ConfigMap key"),
    # model.image (the rule `modeldeploy manifest --image` uses)
    Case("image-with-space", spec(model__image="registry.example/room price:2f1c"), IMAGE_REF),
    Case("image-uppercase-repository", spec(model__image="registry.example/RoomPrice:2f1c"), IMAGE_REF),
    Case("image-empty-tag", spec(model__image="registry.example/room-price:"), IMAGE_REF),
    Case("image-trailing-newline", spec(model__image=IMAGE + "\n"), IMAGE_REF),
    Case("image-empty", spec(model__image=""), IMAGE_REF),
    Case("image-short-digest", spec(model__image="registry.example/room-price@sha256:abc"), IMAGE_REF),
    Case("image-with-scheme", spec(model__image="https://registry.example/room-price:2f1c"), IMAGE_REF),
    # object names
    Case("imagePullSecret-invalid", spec(model__imagePullSecrets=["Regcred"]),
         "model.imagePullSecrets[] must be the name of a Secret"),
    Case("serviceAccountName-invalid", spec(model__serviceAccountName="model_sa"),
         "model.serviceAccountName must be the name of a ServiceAccount"),
    Case("name-starts-with-digit", named("1room-price", spec()), SERVICE_NAME),
    Case("name-with-dot", named("room.price", spec()), SERVICE_NAME),
    Case("name-over-63", named("m" * 64, spec()), SERVICE_NAME),
    Case("name-over-56-with-gateway-api", named("m" * 57, gateway()),
         "metadata.name must be at most 56 characters with the gatewayAPI or istio router"),
    # model.resources
    Case("quantity-word", resources({"cpu": "half"}), QUANTITY),
    Case("quantity-negative", resources(limits={"memory": "-1Gi"}), QUANTITY),
    Case("quantity-unit-mb", resources({"memory": "512mb"}), QUANTITY),
    Case("quantity-with-space", resources({"memory": "512 Mi"}), QUANTITY),
    Case("resource-name-unknown", resources({"gpu": 1}), "a resource name must be cpu, memory, ephemeral-storage"),
    Case("memory-request-over-limit", resources({"memory": "4Gi"}, {"memory": "2Gi"}), WITHIN_LIMIT),
    Case("cpu-request-over-limit", resources({"cpu": 2}, {"cpu": "1500m"}), WITHIN_LIMIT),
    Case("memory-request-over-limit-mixed-units", resources({"memory": "2049Mi"}, {"memory": "2Gi"}), WITHIN_LIMIT),
    Case("cpu-request-over-limit-exponent", resources({"cpu": "1e1"}, {"cpu": 9}), WITHIN_LIMIT),
    Case("gpu-in-requests-only", resources({"cpu": "1", "nvidia.com/gpu": 1}), OVERCOMMIT),
    Case("gpu-request-differs-from-limit", resources({"cpu": "1", "nvidia.com/gpu": 1}, {"nvidia.com/gpu": 2}),
         OVERCOMMIT),
    # autoscaling
    Case("autoscaling-cpu-without-cpu-request", spec(model__resources=NO_CPU, autoscaling={"maxReplicas": 4}),
         "autoscaling on CPU needs a CPU request"),
    Case("autoscaling-explicit-cpu-without-cpu-request",
         spec(model__resources=NO_CPU, autoscaling={"maxReplicas": 4, "targetCpuUtilizationPercentage": 60}),
         "autoscaling on CPU needs a CPU request"),
    Case("autoscaling-cpu-null-is-the-default",  # the API server prunes the null and defaults it (80)
         spec(model__resources=NO_CPU, autoscaling={"maxReplicas": 4, "targetCpuUtilizationPercentage": None,
                                                    "targetMemoryUtilizationPercentage": 80}),
         "autoscaling on CPU needs a CPU request"),
    Case("autoscaling-memory-without-memory-request",
         spec(model__resources={"requests": {"cpu": "500m"}},
              autoscaling={"maxReplicas": 4, "targetMemoryUtilizationPercentage": 80}),
         "autoscaling.targetMemoryUtilizationPercentage needs a memory request"),
    Case("replicas-with-autoscaling", spec(replicas=3, autoscaling={"minReplicas": 2, "maxReplicas": 5}),
         "replicas is ignored while autoscaling is enabled"),
    Case("autoscaling-min-over-max", spec(autoscaling={"minReplicas": 5, "maxReplicas": 2}),
         "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"),
    # strategy Rolling ignores canary steps and analysis
    Case("rolling-with-steps", rolling(canary={"steps": [20, 50]}), ROLLING_CANARY),
    Case("rolling-with-interval", rolling(canary={"interval": "1m"}), ROLLING_CANARY),
    Case("rolling-with-analysis", rolling(analysis={"prometheus": PROM, "metrics": [ERROR_RATE]}), ROLLING_ANALYSIS),
    Case("rolling-with-failure-limit", rolling(analysis={"failureLimit": 3}), ROLLING_ANALYSIS),
    # analysis.metrics
    Case("builtin-error-rate-with-query", analysis({"name": "error-rate", "query": "vector(0)", "max": 0.01}),
         BUILTIN_QUERY),
    Case("builtin-latency-with-query", analysis({"name": "latency-p99", "query": "vector(0)", "max": 0.5}),
         BUILTIN_QUERY),
    Case("check-twice", analysis(ERROR_RATE, {"name": "error-rate", "max": 0.05}), CHECK_ONCE),
    Case("custom-check-twice", analysis({"name": "my-check", "query": "vector(1)", "max": 1},
                                        {"name": "my-check", "query": "vector(2)", "min": 0}), CHECK_ONCE),
    Case("query-variable-typo", query('up{namespace="{{ namespce }}"}'), VARIABLE),
    Case("query-variable-unknown", query('up{pod="{{ pod }}"}'), VARIABLE),
    Case("query-variable-unclosed", query('up{namespace="{{ namespace }"}'), VARIABLE),
    Case("query-blank", query("   "), "analysis.metrics[].query must not be empty"),
    Case("check-name-invalid", analysis({"name": "Error_Rate", "query": "vector(0)", "max": 1}),
         "analysis.metrics[].name must be the name of a check"),
    Case("custom-check-without-query", analysis({"name": "my-check", "max": 1}), "needs a query"),
    Case("check-without-bounds", analysis({"name": "error-rate"}), "analysis.metrics[]: set min and/or max"),
    Case("max-increase-on-latency", analysis({"name": "latency-p99", "maxIncrease": 0.1}),
         "analysis.metrics[]: maxIncrease compares the canary's error rate with the stable's"),
    Case("max-increase-on-custom", analysis({"name": "my-errors", "query": "sum(x)", "maxIncrease": 0.1}),
         "analysis.metrics[]: maxIncrease compares the canary's error rate with the stable's"),
    Case("max-ratio-on-error-rate", analysis({"name": "error-rate", "maxRatio": 1.5}),
         "analysis.metrics[]: maxRatio compares the canary's latency quantile with the stable's"),
    Case("drift-with-min", analysis({"name": "prediction-drift", "min": 0.1}),
         "analysis.metrics[]: prediction-drift and input-drift take only max"),
    Case("drift-max-zero", analysis({"name": "input-drift", "max": 0}),
         "analysis.metrics[]: prediction-drift and input-drift take only max"),
    Case("check-min-over-max", analysis({"name": "request-rate", "min": 5, "max": 1}),
         "analysis.metrics[]: min must be less than or equal to max"),
    Case("error-rate-as-percent", analysis({"name": "error-rate", "max": 5}),
         "error-rate is a ratio: thresholds must be within 0..1"),
    Case("latency-negative", analysis({"name": "latency-p90", "max": -1}),
         "latency thresholds are seconds and must be positive"),
    Case("prometheus-without-metrics", spec(rollout={"analysis": {"prometheus": PROM}}),
         "analysis.prometheus is set but analysis.metrics is empty"),
    Case("metrics-without-prometheus", spec(rollout={"analysis": {"metrics": [ERROR_RATE]}}),
         "rollout.analysis.prometheus is required when analysis metrics are set"),
    Case("prometheus-secret-name-invalid",
         analysis(ERROR_RATE, prometheus={**PROM, "secretRef": {"name": "Prom_Auth"}}),
         "analysis.prometheus.secretRef.name must be the name of a Secret"),
    Case("prometheus-address-user-info", analysis(ERROR_RATE, prometheus={"address": "http://u:p@prometheus:9090"}),
         "analysis.prometheus.address must not contain user info"),
    Case("prometheus-address-not-a-url", analysis(ERROR_RATE, prometheus={"address": "prometheus:9090"}),
         "analysis.prometheus.address must be an http:// or https:// URL"),
    Case("prometheus-address-query", analysis(ERROR_RATE, prometheus={"address": "http://prometheus:9090/?x=1"}),
         "analysis.prometheus.address must not contain a query"),
    Case("prometheus-address-fragment", analysis(ERROR_RATE, prometheus={"address": "http://prometheus:9090/#a"}),
         "analysis.prometheus.address must not contain a fragment"),
    # durations
    Case("interval-zero", spec(rollout={"canary": {"interval": "0s"}}), duration("canary.interval")),
    Case("interval-fraction", spec(rollout={"canary": {"interval": "1.5m"}}), duration("canary.interval")),
    Case("timeout-zero", analysis(ERROR_RATE, prometheus={**PROM, "timeout": "0s"}),
         duration("analysis.prometheus.timeout")),
    Case("measurement-interval-zero", analysis(ERROR_RATE, measurementInterval="0ms"),
         duration("analysis.measurementInterval")),
    # model.args
    Case("args-port", spec(model__args=["--port", "8080"]), PORT_ARG),
    Case("args-port-equals", spec(model__args=["--port=8080"]), PORT_ARG),
    Case("args-short-port", spec(model__args=["-p", "8080"]), PORT_ARG),
    # canary steps and routers
    Case("steps-not-increasing", spec(rollout={"canary": {"steps": [10, 50, 25]}}), "canary.steps must be strictly "
                                                                                     "increasing"),
    Case("steps-repeated", spec(rollout={"canary": {"steps": [10, 10, 50]}}), "canary.steps must be strictly "
                                                                                "increasing"),
    Case("step-zero", spec(rollout={"canary": {"steps": [0, 50]}}), "every step must be within 1..100"),
    Case("two-routers", router(replicas={}, istio={"hosts": ["m"]}),
         "canary.trafficRouter: set exactly one of replicas, gatewayAPI or istio"),
    Case("gateway-parent-name-invalid", gateway({"name": "Public_Gateway"}),
         "gatewayAPI.parentRefs[].name must be the name of a Gateway"),
    Case("gateway-parent-namespace-invalid", gateway({"name": "public", "namespace": "gateway.system"}),
         "gatewayAPI.parentRefs[].namespace must be the name of a namespace"),
    Case("gateway-section-name-invalid", gateway({"name": "public", "sectionName": "HTTPS"}),
         "gatewayAPI.parentRefs[].sectionName must be the name of a listener"),
    Case("gateway-parent-twice", gateway({"name": "public"}, {"name": "public"}),
         "gatewayAPI.parentRefs: a Gateway named twice needs a different sectionName on each reference"),
    Case("gateway-parent-twice-one-section", gateway({"name": "public", "sectionName": "https"}, {"name": "public"}),
         "gatewayAPI.parentRefs: a Gateway named twice needs a different sectionName on each reference"),
    Case("gateway-hostname-with-port", gateway(hostnames=["room-price.example.com:443"]), HOSTNAME),
    Case("gateway-hostname-uppercase", gateway(hostnames=["Room-Price.example.com"]), HOSTNAME),
    Case("gateway-hostname-with-scheme", gateway(hostnames=["https://room-price.example.com"]), HOSTNAME),
    Case("istio-host-with-scheme", istio(hosts=["http://room-price"]), ISTIO_HOST),
    Case("istio-host-with-path", istio(hosts=["room-price/predict"]), ISTIO_HOST),
    Case("istio-host-wildcard-inside", istio(hosts=["room.*.example.com"]), ISTIO_HOST),
    Case("istio-star-host-for-mesh", istio(hosts=["*"]), "istio.hosts: '*' is only allowed with istio.gateways"),
    Case("istio-gateway-three-parts", istio(gateways=["istio-ingress/public/gw"]), ISTIO_GATEWAY),
    Case("istio-gateway-uppercase", istio(gateways=["Public-Gateway"]), ISTIO_GATEWAY),
]

# Near misses: valid on both sides.
ACCEPTED = [
    ("image-with-registry-port", spec(model__image="localhost:5000/room-price:v1")),
    ("image-by-digest", spec(model__image=f"registry.example/room-price@{DIGEST}")),
    ("image-tag-and-digest", spec(model__image=f"ghcr.io/org/team/room_price:1.0-rc_1@{DIGEST}")),
    ("image-ipv6-registry", spec(model__image="[fd00::1]:5000/m:1")),
    ("image-without-tag", spec(model__image="room-price")),
    ("env-from-secret-and-configmap", env({"name": "TOKEN", "valueFrom": SECRET_REF},
                                          {"name": "LEVEL", "valueFrom": CONFIG_REF}, {"name": "EMPTY"},
                                          {"name": "my.dotted-name", "value": ""})),
    ("quantities", resources({"cpu": "0.5", "memory": "1e9", "ephemeral-storage": "1Gi"},
                             {"cpu": 2, "memory": "1.5Gi", "hugepages-2Mi": "0"})),
    ("request-equal-to-limit", resources({"cpu": "1000m", "memory": "1Gi"}, {"cpu": "1", "memory": "1024Mi"})),
    ("gpu-in-limits", resources({"cpu": "1", "nvidia.com/gpu": 1}, {"nvidia.com/gpu": "1"})),
    ("gpu-in-limits-only", resources({"cpu": "1"}, {"nvidia.com/gpu": 2})),
    ("autoscaling-cpu-from-limit", spec(model__resources={"limits": {"cpu": "1", "memory": "1Gi"}},
                                        autoscaling={"maxReplicas": 4})),
    ("autoscaling-off-with-replicas", spec(replicas=3, autoscaling={"enabled": False, "maxReplicas": 4})),
    ("autoscaling-memory", spec(autoscaling={"maxReplicas": 4, "targetMemoryUtilizationPercentage": 80})),
    ("rolling-with-router", rolling(canary={"trafficRouter": {"gatewayAPI": {"parentRefs": [{"name": "public"}]}}})),
    ("rolling-with-default-steps", rolling(canary={"steps": [10, 25, 50], "interval": "30s"})),
    ("custom-query-all-variables", query('sum(rate(x{namespace="{{ namespace }}",n="{{name}}",t="{{ track }}",'
                                         'r="{{  revision }}"}[{{ interval }}]))')),
    ("baseline-checks", analysis({"name": "error-rate", "max": 0.1, "maxIncrease": 0.02},
                                 {"name": "latency-p99", "maxRatio": 1.5}, {"name": "prediction-drift"},
                                 {"name": "input-drift", "max": 0.3}, passConfidence=0.9)),
    ("args-other-flags", spec(model__args=["--production", "--api-workers=2", "--development"])),
    ("name-56-with-istio", named("m" * 56, istio())),
    ("name-63-with-replicas-router", named("m" * 63, spec())),
    ("gateway-parent-twice-by-section", gateway({"name": "public", "sectionName": "http"},
                                                {"name": "public", "sectionName": "https"},
                                                {"name": "public", "namespace": "other"},
                                                hostnames=["*.example.com", "room-price.example.com"])),
    ("istio-hosts-and-gateways", istio(hosts=["room-price", "room-price.example.com", "*.example.com"],
                                       gateways=["mesh", "gw", "istio-ingress/public-gateway",
                                                 "gw.istio-system.svc.cluster.local"])),
    ("istio-star-host-on-gateway", istio(hosts=["*"], gateways=["istio-ingress/public-gateway"])),
    ("measurement-interval-above-interval", analysis(ERROR_RATE, measurementInterval="2m")),
]


def readme_api_example() -> dict[str, Any]:
    """The YAML of README.md's "The ModelDeployment API" section (it documents every field)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## The ModelDeployment API"):]
    block = section[section.index("```yaml\n") + len("```yaml\n"):]
    return dict(yaml.safe_load(block[:block.index("```")]))
