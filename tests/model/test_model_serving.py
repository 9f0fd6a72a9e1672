"""The service served by a real ``bentoml serve`` subprocess: endpoints, metrics, bad requests, faults."""

from __future__ import annotations

import concurrent.futures
import re
import time

import httpx
import numpy as np
import pytest

from modeldeploy_model import runtime
from modeldeploy_model.runtime import ArtifactError
from modeldeploy_model.testing import ServerStartError, serve_subprocess, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def metric_lines(text: str, name: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(name + "{") or ln.startswith(name + " ")]


def labels_of(line: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))


def test_health(client):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_predict_matches_the_artifact(client, tiny_artifact):
    rows = [[50.0, 3.0, 1.0], [120.0, 20.0, 2.0], [18.0, 0.0, 0.0]]
    r = client.post("/predict", json={"rows": rows})
    assert r.status_code == 200
    expected = runtime.load_predictor(tiny_artifact).predict(np.array(rows))
    assert np.allclose(r.json(), expected, rtol=1e-5)
    by_name = client.post("/predict", json={"rows": [{"area": 50, "floor": 3, "renovation": 1}]})
    assert by_name.status_code == 200 and by_name.json() == pytest.approx(r.json()[:1])


def test_predict_names_the_model_version_that_answered(client, tiny_artifact):
    card = runtime.load_card(tiny_artifact)
    r = client.post("/predict", json={"rows": [[50.0, 3.0, 1.0]]})
    assert r.status_code == 200 and r.headers["x-model-version"] == str(card["version"])


def test_concurrent_requests_are_batched_and_answered_correctly(client, tiny_artifact):
    pred = runtime.load_predictor(tiny_artifact)
    rng = np.random.default_rng(0)
    bodies = [rng.uniform([20, 0, 0], [150, 24, 2], size=(int(rng.integers(1, 6)), 3)).round(2) for _ in range(48)]

    def call(rows: np.ndarray) -> list[float]:
        resp = client.post("/predict", json={"rows": rows.tolist()})
        assert resp.status_code == 200, resp.text
        out: list[float] = resp.json()
        return out

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, bodies))
    for rows, ans in zip(bodies, answers, strict=True):
        assert np.allclose(ans, pred.predict(rows), rtol=1e-5)  # each caller gets its own rows back
    metrics = client.get("/metrics").text
    assert metric_lines(metrics, "bentoml_service_adaptive_batch_size_count")


def test_explain(client):
    r = client.post("/explain", json={"rows": [[50, 3, 1], [100, 10, 2]]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["explainer"] == "shap.LinearExplainer"
    assert body["feature_names"] == ["area", "floor", "renovation"]
    for base, att, pred in zip(body["base_values"], body["attributions"], body["predictions"], strict=True):
        assert base + sum(att) == pytest.approx(pred, rel=1e-6)


def test_metadata_is_the_model_card(client, tiny_artifact):
    r = client.get("/metadata")
    assert r.status_code == 200
    card = runtime.load_card(tiny_artifact)
    assert r.json()["version"] == card["version"]
    assert r.json()["data_hash"] == card["data_hash"]
    assert "evaluation" in r.json() and "versions" in r.json()


def test_metrics_series_and_labels(client, tiny_artifact):
    version = runtime.load_card(tiny_artifact)["version"]
    client.post("/predict", json={"rows": [[60, 2, 1]]})
    text = client.get("/metrics").text
    totals = [labels_of(ln) for ln in metric_lines(text, "bentoml_service_request_total")]
    predict_ok = [lb for lb in totals if lb.get("endpoint") == "/predict" and lb.get("http_response_code") == "200"]
    assert predict_ok
    assert {"endpoint", "http_response_code", "service_name", "service_version"} <= set(predict_ok[0])
    buckets = [labels_of(ln) for ln in metric_lines(text, "bentoml_service_request_duration_seconds_bucket")]
    assert any(lb.get("endpoint") == "/predict" and "le" in lb for lb in buckets)
    pred = [labels_of(ln) for ln in metric_lines(text, "modeldeploy_prediction_bucket")]
    assert pred and all(lb["model_version"] == version for lb in pred)
    feats = {labels_of(ln)["feature"] for ln in metric_lines(text, "modeldeploy_input_feature_zscore_count")}
    assert feats == {"area", "floor", "renovation"}
    raw = {labels_of(ln)["feature"] for ln in metric_lines(text, "modeldeploy_input_feature_count")}
    assert raw == {"area", "floor", "renovation"}


BAD_REQUESTS = [
    ("not json", b"this is not json", "json"),
    ("missing rows", b'{"rowz": [[1, 2, 3]]}', "rows"),
    ("rows not a list", b'{"rows": 5}', "list of rows"),
    ("empty rows", b'{"rows": []}', "empty"),
    ("short row", b'{"rows": [[1, 2]]}', "expected 3 values"),
    ("long row", b'{"rows": [[1, 2, 3, 4]]}', "expected 3 values"),
    ("string value", b'{"rows": [[1, "two", 3]]}', "feature 'floor'"),
    ("null value", b'{"rows": [[1, null, 3]]}', "expected a number"),
    ("boolean value", b'{"rows": [[true, 2, 3]]}', "expected a number"),
    ("NaN", b'{"rows": [[NaN, 2, 3]]}', "finite"),
    ("Infinity", b'{"rows": [[1, Infinity, 3]]}', "finite"),
    ("nested too deep", b'{"rows": [[[1], 2, 3]]}', "expected a number"),
    ("row is a string", b'{"rows": ["1,2,3"]}', "row 0"),
    ("unknown feature key", b'{"rows": [{"area": 1, "floor": 2, "rooms": 3}]}', "unknown"),
    ("too many rows", b'{"rows": [' + b",".join([b"[1,2,3]"] * 1025) + b"]}", "too many rows"),
]


@pytest.mark.parametrize(("case", "body", "hint"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_predict_requests_get_a_useful_4xx(client, case, body, hint):
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, (case, r.status_code, r.text)
    assert hint.lower() in r.text.lower(), r.text


def test_each_bad_request_logs_one_warning_line_not_a_traceback(server, client):
    def warnings() -> list[str]:
        return [ln for ln in server.log_tail(10**7).splitlines() if "bad request POST /predict -> 4" in ln]

    before = len(warnings())
    for _, body, _ in BAD_REQUESTS:
        client.post("/predict", content=body, headers={"content-type": "application/json"})
    deadline = time.monotonic() + 10  # the worker's log reaches the file asynchronously
    while len(warnings()) < before + len(BAD_REQUESTS) and time.monotonic() < deadline:
        time.sleep(0.05)
    new = warnings()[before:]
    assert len(new) == len(BAD_REQUESTS), server.log_tail()
    assert all("WARNING" in ln for ln in new)
    assert any("rows: row 0: expected 3 values (area, floor, renovation), got 2" in ln for ln in new), new
    assert "Traceback" not in server.log_tail(10**7) and "Exception on /predict" not in server.log_tail(10**7)


def test_bad_explain_requests_get_a_4xx(client):
    too_many = {"rows": [[1, 2, 3]] * 33}
    r = client.post("/explain", json=too_many)
    assert r.status_code == 400 and "too many rows" in r.text
    assert client.post("/explain", json={"rows": [[1, "x", 3]]}).status_code == 400


def test_still_healthy_after_bad_requests(client):
    for _, body, _ in BAD_REQUESTS:
        client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert client.get("/readyz").status_code == 200
    assert client.post("/predict", json={"rows": [[50, 3, 1]]}).status_code == 200
    text = client.get("/metrics").text
    codes = {labels_of(ln)["http_response_code"] for ln in metric_lines(text, "bentoml_service_request_total")
             if labels_of(ln).get("endpoint") == "/predict" and float(ln.rsplit(" ", 1)[1]) > 0}
    assert "400" in codes and "500" not in codes


def test_fault_injection_counts_as_500_and_adds_latency(tiny_artifact):
    env = {"MODELDEPLOY_FAULT_ERROR_RATE": "1.0", "MODELDEPLOY_FAULT_LATENCY_MS": "200"}
    # A new connection per request, as a client behind a Service: an injected 500 that left the request
    # body unread made the server reset the connection instead of answering.
    with serve_subprocess(tiny_artifact, env=env) as s, \
            httpx.Client(base_url=s.url, timeout=30, headers={"Connection": "close"}) as c:
        answers = [c.post("/predict", json={"rows": [[50, 3, 1]] * 50}) for _ in range(5)]
        assert [a.status_code for a in answers] == [500] * 5
        assert all(a.headers.get("x-model-version") for a in answers)  # a failing version names itself too
        assert c.post("/explain", json={"rows": [[50, 3, 1]]}).status_code == 200  # only /predict is faulted
        text = c.get("/metrics").text
    total = {labels_of(ln)["http_response_code"]: float(ln.rsplit(" ", 1)[1])
             for ln in metric_lines(text, "bentoml_service_request_total") if labels_of(ln)["endpoint"] == "/predict"}
    assert total.get("500") == 5.0
    # the injected 200 ms is inside the measured request duration (a lower bound, not a timing test)
    sums = [float(ln.rsplit(" ", 1)[1]) for ln in metric_lines(text, "bentoml_service_request_duration_seconds_sum")
            if labels_of(ln)["endpoint"] == "/predict" and labels_of(ln)["http_response_code"] == "500"]
    assert sums and sums[0] >= 5 * 0.2


@pytest.mark.parametrize("env", [{"MODELDEPLOY_FAULT_ERROR_RATE": "1.5"}, {"MODELDEPLOY_FAULT_LATENCY_MS": "soon"}])
def test_bad_fault_settings_refused_before_start(tiny_artifact, env):
    with pytest.raises(ValueError, match=next(iter(env))):
        serve_subprocess(tiny_artifact, env=env, timeout=60)


def test_broken_artifact_refused_before_start(tmp_path):
    (tmp_path / "card.json").write_text('{"features": [{"name": "a"}], "runtime": "onnx"}')
    with pytest.raises(ArtifactError, match="no model file"):
        serve_subprocess(tmp_path, timeout=60)
    with pytest.raises(ArtifactError, match="not a modeldeploy artifact"):
        serve_subprocess(tmp_path / "nothing-here", timeout=60)


def test_server_that_exits_reports_its_log(tiny_artifact):
    with pytest.raises(ServerStartError, match="log tail"):
        start_server("no_such_module.service:Nothing", timeout=60)


def test_packaged_bento_serves(pipeline_run):
    pk = pipeline_run.package
    card = runtime.load_card(pipeline_run.artifact_dir)
    with start_server(pk.bento_tag) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/predict", json={"rows": [[50, 3, 1]]})
        assert r.status_code == 200 and len(r.json()) == 1
        assert c.get("/metadata").json()["version"] == card["version"]
        text = c.get("/metrics").text
    versions = {labels_of(ln)["service_version"] for ln in metric_lines(text, "bentoml_service_request_total")}
    assert pk.bento_tag.split(":")[1] in versions


def test_stop_leaves_no_worker_behind_even_if_the_supervisor_died(tiny_artifact):
    import os
    import signal

    s = serve_subprocess(tiny_artifact)
    tree = [pid for pid, _ in s._tree]
    assert tree  # BentoML's worker runs below the supervisor, in a process group of its own
    os.killpg(s.pid, signal.SIGKILL)
    s.process.wait(timeout=30)
    s.stop()

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/status") as f:
                return "zombie" not in f.read()
        except OSError:
            return False

    # SIGKILL is delivered asynchronously: poll (with a deadline) until the killed workers are gone.
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in tree)
