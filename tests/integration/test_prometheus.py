"""The Prometheus fixture is a real server: it scrapes an exporter and answers PromQL."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from localcluster import free_port
from localprom import ScrapeTarget
from tests.conftest import wait_for

pytestmark = pytest.mark.prometheus


def test_scrapes_exporter_and_answers_promql(prometheus) -> None:  # type: ignore[no-untyped-def]
    registry = CollectorRegistry()
    requests = Counter("demo_requests", "requests", ["code"], registry=registry)
    temp = Gauge("demo_temperature", "a gauge", registry=registry)
    requests.labels("200").inc(40)
    requests.labels("500").inc(2)
    temp.set(21.5)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prom = prometheus([ScrapeTarget("exporter", f"127.0.0.1:{port}",
                                        labels={"modeldeploy_io_track": "canary"})])
        wait_for(prom.targets_up, 30, what="scrape target up")
        wait_for(lambda: prom.scalar("demo_temperature") is not None, 30, what="first sample")
        assert prom.scalar("demo_temperature") == 21.5
        # The static label attached by the scrape config is on the series (as relabelling would).
        ratio = prom.scalar('sum(demo_requests_total{code="500",modeldeploy_io_track="canary"})'
                            ' / sum(demo_requests_total{modeldeploy_io_track="canary"})')
        assert ratio == pytest.approx(2 / 42)
        assert prom.query('demo_requests_total{code="404"}') == []
    finally:
        server.shutdown()
        thread.join(timeout=5)


# Tricky strings: fractions, unit order and repeats, zero, case, signs, the 2^63 ns edge. (Not spaces:
# the PromQL lexer skips them inside [...], model.ParseDuration does not.)
DURATION_PROBES = ["30s", "1m30s", "500ms", "1h", "2d", "1w", "1y", "1y2w3d4h5m6s7ms", "01m", "0m30s", "1s500ms",
                   "292y", "106751d", "9223372036854ms", "1.5m", "30s1m", "1m1h", "1ms1s", "1d1w", "1m1m", "0s",
                   "0", "0m0s", "5x", "1M", "1S", "-1m", "+1m", "293y", "106752d", "9223372036855ms"]


def test_the_api_accepts_exactly_the_durations_prometheus_accepts(prometheus) -> None:  # type: ignore[no-untyped-def]
    """Every probe as the window of a real range selector, through the operator's own provider: the
    API (canary.interval) accepts a duration if and only if this Prometheus does."""
    from pydantic import ValidationError

    from modeldeploy.api import Canary
    from modeldeploy.metrics import ProviderError
    from modeldeploy.metrics.prometheus import PrometheusProvider

    provider = PrometheusProvider(prometheus([]).url)
    differ = []
    for d in DURATION_PROBES:
        try:
            provider.query(f"sum(rate(up[{d}]))")
            prom_ok = True
        except ProviderError as e:
            assert "bad_data" in str(e) or "HTTP 400" in str(e), e
            prom_ok = False
        try:
            Canary.model_validate({"interval": d})
            api_ok = True
        except ValidationError:
            api_ok = False
        if prom_ok != api_ok:
            differ.append(f"{d!r}: prometheus {'accepts' if prom_ok else 'rejects'}, "
                          f"the API {'accepts' if api_ok else 'rejects'}")
    assert not differ, differ


# PromQL that makes a real Prometheus echo control characters back in its error (a regexp's text, a
# label name): a custom metric's query is the user's, and the error lands in status and Events.
ECHOING_QUERIES = [r'up{job=~"(password=hunter2-pw \u001b[31m\nX"}',
                   r'label_replace(up, "x\u0007", "$1", "job", "(.*)")', 'up{job=~"(' + "A" * 600 + '"}']


def test_error_bodies_from_a_real_prometheus_are_scrubbed_and_short(prometheus) -> None:  # type: ignore[no-untyped-def]
    from modeldeploy.metrics import ProviderError
    from modeldeploy.metrics.prometheus import PrometheusProvider

    provider = PrometheusProvider(prometheus([]).url, username="ml", password="hunter2-pw")
    for q in ECHOING_QUERIES:
        with pytest.raises(ProviderError) as err:
            provider.query(q)
        msg = str(err.value)
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in msg), repr(msg)
        assert "hunter2-pw" not in msg and len(msg) <= 250, msg
        assert "bad_data" in msg or "execution" in msg or "HTTP 4" in msg, msg  # still says what went wrong
