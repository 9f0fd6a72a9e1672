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
