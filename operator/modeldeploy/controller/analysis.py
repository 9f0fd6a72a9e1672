"""The analysis runner: the only place that queries a metric provider.

The engine says when a measurement is due and what it needs; this module renders the PromQL,
asks the provider, and hands plain numbers (or the provider's error text) to the pure judges in
`rollout.analysis`. A provider failure of any kind is an input ("not a success"), never an
exception out of the reconcile.

It is also the one place that decides whether a ModelDeployment's Prometheus settings may be used
at all (`problems`, which the observer reports as a Degraded condition before any query): the
address must be on the operator's allow-list, and a Secret named by secretRef must opt in with the
`modeldeploy.io/prometheus-credentials=true` label and not be a service-account token. The same
check runs again before every query, so nothing is sent on a stale observation.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime

from kubernetes.client.rest import ApiException

from modeldeploy import opmetrics
from modeldeploy.api import MetricCheck, ModelDeployment, parse_duration
from modeldeploy.k8s import Kube
from modeldeploy.metrics import MetricProvider, ProviderError, queries
from modeldeploy.metrics.prometheus import PrometheusProvider, address_allowed, credentials_from_secret, scrub
from modeldeploy.rollout.analysis import AnalysisResult, Comparison, Measurement, Track, analyse, counted, probe
from modeldeploy.rollout.engine import MeasureRequest, View, fmt_time, measurement_due

log = logging.getLogger(__name__)


class AnalysisRunner:
    def __init__(self, kube: Kube, allowed_addresses: tuple[str, ...] = ()) -> None:
        self.kube = kube
        # The operator's allow-list of Prometheus base URLs (Settings.prometheus_allowed_addresses); empty: any.
        self.allowed_addresses = allowed_addresses
        # When each object's canary was last probed: pacing only (after a restart, probing at once is fine).
        self.last_probe: dict[tuple[str, str], datetime] = {}

    def measure(self, key: tuple[str, str], md: ModelDeployment, view: View, now: datetime) -> AnalysisResult | None:
        """Take the measurement the engine says is due (None when nothing is)."""
        req = measurement_due(md, view, now)
        if req is None:
            return None
        if req.kind == "probe":
            self.last_probe[key] = now
        result = self._measure(md, req, fmt_time(now))
        result.kind, result.revision = req.kind, req.revision
        ns, name = md.namespace, md.name
        for rec in result.records:
            opmetrics.ANALYSIS.labels(ns, name, rec.metric, rec.verdict).inc()
        if req.kind == "step" or result.verdict == "Fail":
            log.info("%s/%s: %s analysis %s: %s", ns, name, req.kind, result.verdict, result.reason)
        return result

    def forget(self, key: tuple[str, str]) -> None:
        self.last_probe.pop(key, None)

    def _measure(self, md: ModelDeployment, req: MeasureRequest, stamp: str) -> AnalysisResult:
        a = md.spec.rollout.analysis
        if not a.metrics:
            return AnalysisResult("Pass", [], "no metrics configured: the step advanced on time")
        ns, name, rev, window = md.namespace, md.name, req.revision, req.window
        try:
            provider = self.provider_for(md)
        except ProviderError as e:
            err = Measurement(check=None, error=str(e))
            return analyse(a, err, [], stamp) if req.kind == "step" else probe(a, err, None, [], stamp, req.alpha, 0)

        def value_check(check: MetricCheck) -> Measurement:
            promql = queries.render(check.query, namespace=ns, name=name, track="canary", revision=rev,
                                    interval=window) if check.query else \
                queries.builtin(check.name, ns, name, "canary", rev, window)
            return _query(provider, check, promql)

        stable = md.status.stable.hash if md.status.stable is not None else None
        comparisons = [compare_tracks(provider, c, ns, name, rev, stable, window) for c in a.metrics if c.comparison]
        if req.kind == "probe":
            requests = _query(provider, None, queries.request_delta(ns, name, "canary", rev, window))
            errors = None
            if any(counted(c) for c in a.metrics):
                errors = _query(provider, None, queries.request_delta(ns, name, "canary", rev, window, errors=True))
            values = [Measurement(c) if counted(c) else value_check(c) for c in a.metrics if c.absolute]
            return probe(a, requests, errors, values, stamp, req.alpha, md.status.probe_failures, comparisons)
        requests = _query(provider, None, queries.request_count(ns, name, "canary", rev, window))
        targets = None
        if requests.error is None and requests.value is None:  # no series at all: no traffic, or unseen pods?
            targets = _query(provider, None, queries.targets(ns, name, "canary", rev))
        return analyse(a, requests, [value_check(c) for c in a.metrics if c.absolute], stamp, targets=targets,
                       comparisons=comparisons)

    def problems(self, md: ModelDeployment) -> list[str]:
        """What forbids using this object's Prometheus settings (empty: nothing, or no analysis to run)."""
        a, rollout = md.spec.rollout.analysis, md.spec.rollout
        if rollout.strategy != "Canary" or not a.metrics or a.prometheus is None:
            return []
        try:
            self.provider_for(md)
        except ProviderError as e:
            return [str(e)]
        return []

    def provider_for(self, md: ModelDeployment) -> MetricProvider:
        prom = md.spec.rollout.analysis.prometheus
        if prom is None:
            raise ProviderError("spec.rollout.analysis.prometheus is not set")
        if not address_allowed(prom.address, self.allowed_addresses):
            raise ProviderError(
                f"analysis.prometheus.address {prom.address} is not on the operator's allow-list of Prometheus "
                f"addresses ({', '.join(self.allowed_addresses)}): use one of them, or ask the cluster's operator "
                "admin to add it (Helm value prometheus.allowedAddresses)")
        kwargs: dict = {}
        if prom.secret_ref is not None:
            name = prom.secret_ref.name
            try:
                secret = self.kube.get("Secret", md.namespace, name)
            except ApiException as e:
                if e.status != 403:
                    raise
                raise ProviderError(
                    f"the operator may not read Secret {name!r} (analysis.prometheus.secretRef) in namespace "
                    f"{md.namespace!r}: install the chart with prometheus.credentials.enabled=true (and this name in "
                    "prometheus.credentials.secretNames, if that list is set)") from None
            if secret is None:
                raise ProviderError(f"Secret {name!r} (analysis.prometheus.secretRef) not found in namespace "
                                    f"{md.namespace!r}")
            kwargs = credentials_from_secret(secret)
        return PrometheusProvider(prom.address, timeout=parse_duration(prom.timeout),
                                  insecure_skip_verify=prom.insecure_skip_verify, **kwargs)


def _query(provider: MetricProvider, check: MetricCheck | None, promql: str) -> Measurement:
    """One query; every failure, whatever raised it, is an error measurement with a message."""
    try:
        return Measurement(check=check, value=provider.query(promql))
    except ProviderError as e:
        return Measurement(check=check, error=str(e))
    except Exception as e:  # a provider bug must still be "not a success", never a failed reconcile
        log.exception("metric provider failed on %s", promql)
        return Measurement(check=check, error=f"provider failed: {type(e).__name__}: {scrub(str(e))}")



def _number(value: float | None) -> float:
    return 0.0 if value is None or math.isnan(value) else value


def compare_tracks(provider: MetricProvider, check: MetricCheck, namespace: str, name: str, canary: str,
                stable: str | None, window: str) -> Comparison:
    """Both tracks' data for one baseline check over the same window; any failure is the comparison's error."""
    if stable is None:
        return Comparison(check, error="no stable revision to compare the canary with")
    tracks: dict[str, Track] = {}
    for track, revision in (("canary", canary), ("stable", stable)):
        t = tracks[track] = Track()
        for key, promql in queries.comparison(check.name, namespace, name, track, revision, window).items():
            try:
                if key == "requests":
                    t.requests = _number(provider.query(promql))
                elif key == "errors":
                    t.errors = _number(provider.query(promql))
                elif key == "buckets":
                    t.buckets = [(float(labels["le"]), _number(v)) for labels, v in provider.query_vector(promql)
                                 if "le" in labels]
                else:
                    for labels, v in provider.query_vector(promql):
                        if "le" in labels:
                            t.features.setdefault(labels.get("feature", "?"), []).append(
                                (float(labels["le"]), _number(v)))
            except ProviderError as e:
                return Comparison(check, error=str(e))
            except Exception as e:  # a provider bug must still be "not a success", never a failed reconcile
                log.exception("metric provider failed on %s", promql)
                return Comparison(check, error=f"provider failed: {type(e).__name__}: {scrub(str(e))}")
    return Comparison(check, canary=tracks["canary"], stable=tracks["stable"])
