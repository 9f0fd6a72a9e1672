"""PromQL for canary analysis: the built-in checks over BentoML's own series, and custom templates.

BentoML (>= 1.2) exports `bentoml_service_request_total{endpoint, http_response_code, ...}` and
`bentoml_service_request_duration_seconds_bucket`. Prometheus attaches the pod labels
`modeldeploy.io/name` and `modeldeploy.io/track` as `modeldeploy_io_name` / `modeldeploy_io_track`
(manifests/monitoring has the relabelling), plus `namespace`. Every built-in query selects exactly
those labels, so stable and canary are measured separately. Health and metrics endpoints are
excluded: probes must not dilute the error rate.

The revision (`modeldeploy_io_revision`, also relabelled from the pod) is selected too: right after
a rollback, the failed canary's series are still inside the next canary's first window, and on a
real cluster they made a healthy v3 fail on v2's errors. A series without the label still matches
(`=~"<rev>|"`), so a scrape config that does not copy it keeps working as before.
"""

from __future__ import annotations

import re

from modeldeploy.api import TEMPLATE_VARIABLE_RE

REQUESTS = "bentoml_service_request_total"
DURATION = "bentoml_service_request_duration_seconds_bucket"
# The modeldeploy Bento service's own histograms (bento/modeldeploy_model/service.py).
PREDICTIONS = "modeldeploy_prediction_bucket"
FEATURES = "modeldeploy_input_feature_bucket"  # inputs in their own units, one bucket layout for every version
INFRA_ENDPOINTS = "/livez|/readyz|/healthz|/metrics"

# The variables and their syntax are the API's (the CRD refuses a query with any other {{ ... }}).
_VAR = re.compile(TEMPLATE_VARIABLE_RE)


def selector(namespace: str, name: str, track: str, revision: str) -> str:
    return (f'namespace="{namespace}",modeldeploy_io_name="{name}",modeldeploy_io_track="{track}",'
            f'modeldeploy_io_revision=~"{re.escape(revision)}|",endpoint!~"{INFRA_ENDPOINTS}"')


def render(template: str, *, namespace: str, name: str, track: str, revision: str, interval: str) -> str:
    """Substitute {{ namespace }}, {{ name }}, {{ track }}, {{ revision }}, {{ interval }}."""
    values = {"namespace": namespace, "name": name, "track": track, "revision": revision, "interval": interval}
    return _VAR.sub(lambda m: values[m.group(1)], template)


def request_count(namespace: str, name: str, track: str, revision: str, window: str) -> str:
    return f"sum(increase({REQUESTS}{{{selector(namespace, name, track, revision)}}}[{window}]))"


def request_delta(namespace: str, name: str, track: str, revision: str, window: str, errors: bool = False) -> str:
    """Requests (or 5xx answers) since `window` ago, from the raw counters: the latest value minus the
    value `window` ago, where a series born inside the window counts from zero. Unlike increase(),
    this needs one scrape, not two, so an in-step measurement sees a failing canary a scrape sooner.
    Counter resets undercount (a probe only fails on certainty, so that errs on the safe side)."""
    sel = selector(namespace, name, track, revision) + (',http_response_code=~"5.."' if errors else "")
    now = f"sum({REQUESTS}{{{sel}}})"
    if errors:
        now = f"({now} or vector(0))"
    return f"{now} - (sum({REQUESTS}{{{sel}}} offset {window}) or vector(0))"


def targets(namespace: str, name: str, track: str, revision: str) -> str:
    """Scrape targets Prometheus has for the track's pods, by the relabelled pod labels (`up` carries them)."""
    return (f'count(up{{namespace="{namespace}",modeldeploy_io_name="{name}",modeldeploy_io_track="{track}",'
            f'modeldeploy_io_revision=~"{re.escape(revision)}|"}})')


def builtin(metric: str, namespace: str, name: str, track: str, revision: str, window: str) -> str:
    sel = selector(namespace, name, track, revision)
    if metric == "error-rate":
        return (f'sum(increase({REQUESTS}{{{sel},http_response_code=~"5.."}}[{window}])) '
                f"/ sum(increase({REQUESTS}{{{sel}}}[{window}]))")
    if metric == "request-rate":
        return f"sum(rate({REQUESTS}{{{sel}}}[{window}]))"
    if metric.startswith("latency-p"):
        q = int(metric.removeprefix("latency-p")) / 100
        return f"histogram_quantile({q}, sum by (le) (rate({DURATION}{{{sel}}}[{window}])))"
    raise ValueError(f"unknown built-in metric {metric!r}")


def track_selector(namespace: str, name: str, track: str, revision: str) -> str:
    """The track's series by the relabelled pod labels alone (for series without an endpoint label)."""
    return (f'namespace="{namespace}",modeldeploy_io_name="{name}",modeldeploy_io_track="{track}",'
            f'modeldeploy_io_revision=~"{re.escape(revision)}|"')


def histogram_delta(metric: str, sel: str, by: str, window: str) -> str:
    """Bucket counts gained since `window` ago, per `by` (e.g. "le"), from the raw counters as in
    `request_delta`: a bucket series born inside the window counts from zero."""
    now = f"sum by ({by}) ({metric}{{{sel}}})"
    return f"({now} - sum by ({by}) ({metric}{{{sel}}} offset {window})) or {now}"


def comparison(check_name: str, namespace: str, name: str, track: str, revision: str,
               window: str) -> dict[str, str]:
    """What a baseline check needs of one track over the window: named queries (see controller.analysis)."""
    if check_name == "error-rate":
        return {"requests": request_delta(namespace, name, track, revision, window),
                "errors": request_delta(namespace, name, track, revision, window, errors=True)}
    if check_name.startswith("latency-p"):
        return {"buckets": histogram_delta(DURATION, selector(namespace, name, track, revision), "le", window)}
    if check_name == "prediction-drift":
        return {"buckets": histogram_delta(PREDICTIONS, track_selector(namespace, name, track, revision), "le",
                                           window)}
    if check_name == "input-drift":
        return {"features": histogram_delta(FEATURES, track_selector(namespace, name, track, revision),
                                            "feature, le", window)}
    raise ValueError(f"no baseline comparison for {check_name!r}")
