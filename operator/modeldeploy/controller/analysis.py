"""The analysis runner: the only place that queries a metric provider.

The engine says when a measurement is due and what it needs; this module renders the PromQL,
asks the provider, and hands plain numbers (or the provider's error text) to the pure judges in
`rollout.analysis`. A provider failure of any kind is an input ("not a success"), never an
exception out of the reconcile.
"""

from __future__ import annotations

import base64
import logging
from datetime import datetime

from modeldeploy import opmetrics
from modeldeploy.api import MetricCheck, ModelDeployment, parse_duration
from modeldeploy.k8s import Kube
from modeldeploy.metrics import MetricProvider, ProviderError, queries
from modeldeploy.metrics.prometheus import PrometheusProvider
from modeldeploy.reconcile import Observed
from modeldeploy.reconcile import view_of as plan_view
from modeldeploy.resources.common import revision_hash
from modeldeploy.rollout.analysis import AnalysisResult, Measurement, analyse
from modeldeploy.rollout.engine import analysis_due_in, fmt_time

log = logging.getLogger(__name__)


class AnalysisRunner:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def run_analysis(self, md: ModelDeployment, observed: Observed, now: datetime) -> AnalysisResult | None:
        """Measure the canary when its step's analysis is due; None when nothing is due."""
        due = analysis_due_in(md, now)
        canary = md.status.canary
        if due is None or due > 0 or canary is None or canary.hash != revision_hash(md.spec.model):
            return None
        if not plan_view(md, observed).canary_ready:
            return None
        a = md.spec.rollout.analysis
        stamp = fmt_time(now)
        if not a.metrics:
            return AnalysisResult("Pass", [], "no metrics configured: the step advanced on time")
        interval = md.spec.rollout.canary.interval
        ns, name = md.namespace, md.name
        try:
            provider = self.provider_for(md)
        except ProviderError as e:
            provider, setup_error = None, str(e)
        measurements: list[Measurement] = []
        requests: Measurement | None = None
        if provider is None:
            requests = Measurement(check=None, error=setup_error)
        else:
            requests = _measure(provider, None, queries.request_count(ns, name, "canary", canary.hash, interval))
            for check in a.metrics:
                promql = queries.render(check.query, namespace=ns, name=name, track="canary", revision=canary.hash,
                                        interval=interval) if check.query else \
                    queries.builtin(check.name, ns, name, "canary", canary.hash, interval)
                measurements.append(_measure(provider, check, promql))
        result = analyse(a, requests, measurements, stamp)
        for rec in result.records:
            opmetrics.ANALYSIS.labels(ns, name, rec.metric, rec.verdict).inc()
        log.info("%s/%s: analysis %s: %s", ns, name, result.verdict, result.reason)
        return result

    def provider_for(self, md: ModelDeployment) -> MetricProvider:
        prom = md.spec.rollout.analysis.prometheus
        if prom is None:
            raise ProviderError("spec.rollout.analysis.prometheus is not set")
        kwargs: dict = {}
        if prom.secret_ref is not None:
            secret = self.kube.get("Secret", md.namespace, prom.secret_ref.name)
            if secret is None:
                raise ProviderError(f"Secret {prom.secret_ref.name!r} (analysis.prometheus.secretRef) not found")
            data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
            kwargs = {"token": data.get("token"), "username": data.get("username"),
                      "password": data.get("password"), "ca_pem": data.get("ca.crt")}
        return PrometheusProvider(prom.address, timeout=parse_duration(prom.timeout),
                                  insecure_skip_verify=prom.insecure_skip_verify, **kwargs)


def _measure(provider: MetricProvider, check: MetricCheck | None, promql: str) -> Measurement:
    try:
        return Measurement(check=check, value=provider.query(promql))
    except ProviderError as e:
        return Measurement(check=check, error=str(e))

