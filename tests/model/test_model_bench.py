"""The benchmark's parsing and bookkeeping (the benchmark itself is `make bench-serving`, not a test)."""

import pytest

from modeldeploy_model.bench_serving import parse_wrk

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:41609/predict
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    26.81ms    9.40ms 120.35ms   90.11%
    Req/Sec     1.21k   112.20     1.40k    71.00%
  Latency Distribution
     50%   24.10ms
     75%   27.32ms
     90%   35.84ms
     99%    1.02s
  12077 requests in 10.01s, 2.43MB read
  Non-2xx or 3xx responses: 77
Requests/sec:   1206.49
Transfer/sec:    248.60KB
"""


def test_parse_wrk():
    r = parse_wrk("t", 32, WRK_OUTPUT)
    assert r.requests == 12077 and r.errors == 77
    assert r.p50_ms == pytest.approx(24.10) and r.p99_ms == pytest.approx(1020.0)
    assert r.throughput_rps == pytest.approx((12077 - 77) / 10.01, abs=0.1)  # errors do not count as throughput


def test_parse_wrk_rejects_garbage():
    with pytest.raises(RuntimeError, match="unexpected wrk output"):
        parse_wrk("t", 1, "connection refused")
