"""Model cards: card.json -> the compact ModelCard, the plan carrying it in status, the reader's caching,
the image labels and the `bentoml containerize` command that sets them, and `modeldeploy status`."""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import threading
from typing import Any

import pytest

from modeldeploy.api import CARD_CHECKS_MAX, CARD_TEXT_MAX, ModelCard, ModelDeployment
from modeldeploy.cli_operator import render_status
from modeldeploy.controller.cards import RETRY_MAX_SECONDS, RETRY_SECONDS, CardError, CardReader
from modeldeploy.crd import generate
from modeldeploy.reconcile import Observed
from modeldeploy.resources.common import LABEL_NAME, LABEL_REVISION
from modeldeploy.rollout.analysis import AnalysisResult
from modeldeploy_model import deploy
from tests.unit.helpers import V2, World

# The fields of a real card.json (`modeldeploy demo-artifact`, plus a gate given on the command line) that
# the compact card reads; the rest of a card (features, latency, versions, ...) is left out here.
CARD: dict[str, Any] = {
    "name": "room_price", "version": "5ff0e1224b29", "kind": "ridge", "family": "linear", "framework": "sklearn",
    "dataset": "room_price",
    "data_hash": "sha256:77e624a530ae132a0d2b8e20205da42bf67325ad84d91f983f1e9bc43d3a988b",
    "features": [{"name": "area", "min": 18.4, "max": 158.3, "mean": 86.8, "std": 39.5, "buckets": [32.2]}],
    "runtime": "onnx", "runtimes": ["sklearn", "onnx"],
    "evaluation": {"selected": "ridge", "selection_metric": "rmse", "metrics": {
        "test": {"mae": 10.47, "mse": 155.17, "r2": 0.9910748355694021, "rmse": 12.456652261519766},
        "val": {"mae": 10.85, "mse": 166.2, "r2": 0.9896, "rmse": 12.89}}},
    "gate": {"checks": [{"metric": "r2", "op": ">=", "threshold": 0.9, "value": 0.9910748355694021, "passed": True},
                        {"metric": "rmse", "op": "<=", "threshold": 15.0, "value": 12.456652261519766,
                         "passed": True}],
             "passed": True, "split": "test"},
    "export": {"chosen_runtime": "onnx", "candidates": ["sklearn", "onnx"], "parity": [
        {"runtime": "onnx", "max_abs_diff": 4.9602655678882e-05, "rmse_original": 12.4567,
         "rmse_candidate": 12.4566, "rmse_relative_delta": 5.5e-07, "tolerance_abs": 2.637,
         "tolerance_rmse_relative": 0.01, "passed": True, "reason": ""}], "latency": [], "errors": {}},
    "versions": {"python": "3.11.7", "bentoml": "1.4.40"},
}


def card_v2() -> dict[str, Any]:
    c = copy.deepcopy(CARD)
    c.update(version="a1b2c3d4e5f6", kind="forest", runtime="sklearn")
    c["evaluation"]["metrics"]["test"].update(r2=0.95, rmse=18.25)
    return c


# --------------------------------------------------------------------------------------------
# card.json -> ModelCard
# --------------------------------------------------------------------------------------------
def test_compact_card_from_a_pipeline_card() -> None:
    mc = ModelCard.from_card(CARD)
    assert (mc.name, mc.version, mc.kind, mc.framework, mc.runtime, mc.dataset) == (
        "room_price", "5ff0e1224b29", "ridge", "sklearn", "onnx", "room_price")
    assert mc.data_hash == CARD["data_hash"]
    assert mc.r2 == pytest.approx(0.99107, abs=1e-5) and mc.rmse == pytest.approx(12.4567, abs=1e-4)
    assert mc.gate is not None and mc.gate.passed
    assert [(c.metric, c.op, c.threshold, c.passed) for c in mc.gate.checks] == [
        ("r2", ">=", 0.9, True), ("rmse", "<=", 15.0, True)]
    assert mc.gate.checks[1].value == pytest.approx(12.4567, abs=1e-4)
    assert mc.parity is not None and (mc.parity.runtime, mc.parity.passed) == ("onnx", True)
    assert mc.parity.max_abs_diff == pytest.approx(4.96e-05, rel=1e-3)
    assert mc.summary == "ridge 5ff0e122 onnx R²=0.991 RMSE=12.5 gate passed"
    wire = mc.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert wire["dataHash"] == CARD["data_hash"] and wire["parity"]["maxAbsDiff"] == pytest.approx(4.96e-05, rel=1e-3)
    assert len(json.dumps(wire)) < 800  # status stays small: no features, latency or versions
    assert ModelCard.model_validate(wire) == mc  # what status holds reads back as it was


def test_native_runtime_has_no_parity_and_a_failed_gate_says_so() -> None:
    c = card_v2()
    c["gate"] = {"passed": False, "checks": [{"metric": "r2", "op": ">=", "threshold": 0.99, "value": 0.95,
                                              "passed": False}]}
    mc = ModelCard.from_card(c)
    assert mc.parity is None  # the parity entry is the onnx export's; sklearn is served
    assert mc.gate is not None and not mc.gate.passed and not mc.gate.checks[0].passed
    assert mc.summary == "forest a1b2c3d4 sklearn R²=0.95 RMSE=18.2 gate FAILED"


@pytest.mark.parametrize("card", [{}, {"name": 3, "evaluation": "x", "gate": [], "export": {"parity": "no"}},
                                  None, [], "card"])
def test_a_malformed_card_is_read_as_far_as_it_goes(card: Any) -> None:
    mc = ModelCard.from_card(card)
    assert mc.gate is None and mc.parity is None and mc.r2 is None
    assert mc.name in (None, "3")


def test_untrusted_values_are_bounded() -> None:
    """The card comes from whoever built the image: long strings are cut, many checks dropped, NaN is null."""
    c = copy.deepcopy(CARD)
    c["name"] = "x" * 10_000
    c["evaluation"]["metrics"]["test"] = {"r2": float("nan"), "rmse": "inf"}
    c["gate"]["checks"] = [{"metric": "r2", "op": ">=", "threshold": 0.1, "value": float("nan"), "passed": True}] * 50
    mc = ModelCard.from_card(c)
    assert mc.name is not None and len(mc.name) == CARD_TEXT_MAX
    assert mc.r2 is None and mc.rmse is None
    assert mc.gate is not None and len(mc.gate.checks) == CARD_CHECKS_MAX and mc.gate.checks[0].value is None
    assert not any(isinstance(v, float) and not math.isfinite(v)
                   for v in json.loads(mc.model_dump_json()).values())


def test_the_crd_schema_holds_the_card_of_stable_and_canary() -> None:
    status = generate()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for track in ("stable", "canary"):
        card = status[track]["properties"]["card"]["properties"]
        assert {"name", "version", "kind", "runtime", "dataset", "dataHash", "gate", "r2", "rmse", "parity",
                "summary"} <= set(card)
        assert card["gate"]["properties"]["checks"]["maxItems"] == CARD_CHECKS_MAX


# --------------------------------------------------------------------------------------------
# The plan: observed cards into status, carried across promotion, never in history
# --------------------------------------------------------------------------------------------
class CardWorld(World):
    """World whose ready pods serve a card per image, read by the controller's own CardReader."""

    def __init__(self, cards_by_image: dict[str, dict[str, Any]], **kw: Any) -> None:
        super().__init__(**kw)
        self.cards_by_image = cards_by_image
        self.reads: list[str] = []
        self.reader = CardReader(self, fetch=self.fetch, clock=lambda: 0.0)  # type: ignore[arg-type]

    def list(self, kind: str, namespace: str, label_selector: str, limit: int = 50,
             timeout: float = 30) -> list[dict[str, Any]]:
        """The Kube.list the reader calls: a ready pod (its IP: the image, for `fetch`) per Deployment of
        the revision with ready replicas."""
        revision = dict(kv.split("=") for kv in label_selector.split(","))[LABEL_REVISION]
        pods = []
        for (k, _), dep in self.objects.items():
            tmpl = dep.get("spec", {}).get("template", {})
            if k == "Deployment" and (dep.get("status") or {}).get("readyReplicas") and \
                    tmpl["metadata"]["labels"][LABEL_REVISION] == revision:
                pods.append(pod(tmpl["spec"]["containers"][0]["image"]))
        return pods

    def fetch(self, host: str, port: int) -> ModelCard:
        self.reads.append(host)
        if host not in self.cards_by_image:
            raise CardError("GET /metadata answered HTTP 404")
        return ModelCard.from_card(self.cards_by_image[host])

    def observed(self) -> Observed:
        obs = super().observed()
        obs.cards = self.reader.cards(self.md, obs)
        return obs


def passed() -> AnalysisResult:
    return AnalysisResult("Pass", [], "all checks passed")


def test_cards_in_status_for_stable_and_canary_and_the_canarys_becomes_the_stables() -> None:
    w = CardWorld({"registry.example/m:v1": CARD, V2["image"]: card_v2()})
    w.settle()
    assert w.status["stable"]["card"]["summary"] == "ridge 5ff0e122 onnx R²=0.991 RMSE=12.5 gate passed"
    assert w.reads == ["registry.example/m:v1"]  # read once, then carried in status
    w.set_model(V2)
    w.step()
    w.step()
    assert w.status["canary"]["card"]["version"] == "a1b2c3d4e5f6"
    assert w.status["stable"]["card"]["version"] == "5ff0e1224b29"
    assert w.reads == ["registry.example/m:v1", V2["image"]]
    for _ in range(6):  # the steps pass until the canary is promoted
        p = w.step(passed(), advance=30)
        if p.decision and p.decision.promoted:
            break
    else:
        raise AssertionError("not promoted")
    w.settle()
    assert w.status.get("canary") is None
    assert w.status["stable"]["image"] == V2["image"]
    assert w.status["stable"]["card"]["version"] == "a1b2c3d4e5f6"  # the canary's card, not read again
    assert w.reads == ["registry.example/m:v1", V2["image"]]
    assert w.status["history"] and all(h["revision"].get("card") is None for h in w.status["history"])
    ModelDeployment.model_validate(w.body)  # status with cards reads back


def test_no_card_observed_leaves_the_card_empty_and_the_plan_unchanged_otherwise() -> None:
    w = CardWorld({})
    p = w.settle()
    assert w.status["stable"].get("card") is None and w.status["phase"] == "Healthy" and not p.actions


# --------------------------------------------------------------------------------------------
# The reader: which pod, cached per revision, retried at most every RETRY_SECONDS, never raising
# --------------------------------------------------------------------------------------------
def pod(ip: str, ready: bool = True, port: int = 3000, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": f"p-{ip}"}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-03T00:00:00Z"
    return {"metadata": meta, "spec": {"containers": [{"ports": [{"name": "http", "containerPort": port}]}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


class FakeKube:
    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.lists: list[tuple[str, str, str]] = []
        self.fail = False

    def list(self, kind: str, namespace: str, label_selector: str, limit: int = 50,
             timeout: float = 30) -> list[dict[str, Any]]:
        self.lists.append((kind, namespace, label_selector))
        assert timeout <= 2.0
        if self.fail:
            raise OSError("connection refused")
        return self.pods


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def with_stable(card: dict[str, Any] | None = None) -> ModelDeployment:
    w = World()
    w.settle()
    if card is not None:
        w.body["status"]["stable"]["card"] = card
    return w.md


def test_reader_asks_one_ready_pod_of_the_revision_then_stops() -> None:
    kube = FakeKube([pod("10.0.0.1", ready=False), pod("10.0.0.2", deleting=True), pod("10.0.0.3", port=8080)])
    fetched: list[tuple[str, int]] = []

    def fetch(host: str, port: int) -> ModelCard:
        fetched.append((host, port))
        return ModelCard.from_card(CARD)

    md = with_stable()
    reader = CardReader(kube, fetch=fetch, clock=Clock())  # type: ignore[arg-type]
    cards = reader.cards(md)
    assert md.status.stable is not None
    assert list(cards) == [md.status.stable.hash] and cards[md.status.stable.hash].version == "5ff0e1224b29"
    assert fetched == [("10.0.0.3", 8080)]  # the ready, not-terminating pod, on its http port
    assert kube.lists == [("Pod", md.namespace, f"{LABEL_NAME}={md.name},{LABEL_REVISION}={md.status.stable.hash}")]
    # Once status holds the card, nothing is asked again.
    assert reader.cards(with_stable(ModelCard.from_card(CARD).model_dump(by_alias=True, mode="json"))) == {}
    assert len(kube.lists) == 1 and len(fetched) == 1


def test_reader_retries_a_failure_after_the_retry_interval_backing_off_and_never_raises() -> None:
    kube, clock = FakeKube([pod("10.0.0.1")]), Clock()
    calls = 0

    def fetch(host: str, port: int) -> ModelCard:
        nonlocal calls
        calls += 1
        raise CardError("GET /metadata answered HTTP 404")

    reader = CardReader(kube, fetch=fetch, clock=clock)  # type: ignore[arg-type]
    md = with_stable()
    assert reader.cards(md) == {} and calls == 1
    clock.t += RETRY_SECONDS - 1
    assert reader.cards(md) == {} and calls == 1 and len(kube.lists) == 1  # not yet
    clock.t += 1
    kube.fail = True  # the pod list fails: still nothing raised
    assert reader.cards(md) == {} and calls == 1 and len(kube.lists) == 2
    clock.t += 2 * RETRY_SECONDS  # the second failure doubled the wait
    kube.fail = False
    kube.pods = []  # no ready pod
    assert reader.cards(md) == {} and calls == 1 and len(kube.lists) == 3
    kube.pods = [pod("10.0.0.1")]
    clock.t += 4 * RETRY_SECONDS - 1
    assert reader.cards(md) == {} and len(kube.lists) == 3
    clock.t += 1
    assert reader.cards(md) == {} and calls == 2
    for _ in range(10):  # the wait stops doubling at RETRY_MAX_SECONDS
        clock.t += RETRY_MAX_SECONDS
        reader.cards(md)
    assert calls == 12
    reader.forget(md.namespace, md.name)
    assert reader.cards(md) == {} and calls == 13  # forgotten: asked at once


# --------------------------------------------------------------------------------------------
# Image labels and the containerize command line
# --------------------------------------------------------------------------------------------
def test_image_labels_from_the_card() -> None:
    labels = deploy.image_labels(CARD)
    p = deploy.LABEL_PREFIX
    assert p == "io.modeldeploy.card"
    assert labels[f"{p}.version"] == "5ff0e1224b29" and labels[f"{p}.kind"] == "ridge"
    assert labels[f"{p}.runtime"] == "onnx" and labels[f"{p}.dataset"] == "room_price"
    assert labels[f"{p}.data-hash"] == CARD["data_hash"]
    assert labels[f"{p}.gate"] == "passed"
    assert labels[f"{p}.gate-checks"] == "r2 >= 0.9: 0.991075; rmse <= 15: 12.4567"
    assert labels[f"{p}.r2"] == "0.991075" and labels[f"{p}.rmse"] == "12.4567"
    assert labels[f"{p}.parity"] == "onnx max_abs_diff=4.96e-05 passed=True"
    # The compact card, as status would show it.
    assert ModelCard.model_validate(json.loads(labels[p])) == ModelCard.from_card(CARD)
    assert all(isinstance(v, str) and "\n" not in v for v in labels.values())
    native = deploy.image_labels(card_v2())
    assert native[f"{p}.parity"] == "native" and native[f"{p}.kind"] == "forest"
    assert f"{p}.gate" not in deploy.image_labels({"name": "m"})  # no gate recorded: no label


def _labels_in(cmd: list[str]) -> dict[str, str]:
    out = {}
    for flag, value in itertools.pairwise(cmd):
        if flag == "--opt" and value.startswith("label="):
            key, _, v = value.removeprefix("label=").partition("=")
            out[key] = v
    return out


@pytest.mark.parametrize("backend", ["buildah", "docker"])
def test_containerize_command_sets_the_labels(backend: str) -> None:
    cmd = deploy.containerize_command("room_price:abc", "registry.example/m:v1", backend,
                                      "localhost/modeldeploy/base:x", ["--opt", "no-cache"], card=CARD)
    assert cmd[1:7] == ["-m", "bentoml", "containerize", "room_price:abc", "--backend", backend]
    assert cmd[cmd.index("-t") + 1] == "registry.example/m:v1"
    assert _labels_in(cmd) == deploy.image_labels(CARD)
    assert ("pull-never" in cmd) == (backend == "buildah")
    assert cmd[-2:] == ["--opt", "no-cache"]
    # BentoML's --opt parser splits ARG from VALUE at the first '=' or ':': the key stays `label`.
    for flag, value in itertools.pairwise(cmd):
        if flag == "--opt" and value.startswith("label"):
            assert re.split(r"=|:", value, maxsplit=1)[0] == "label"


def test_containerize_without_a_card_sets_no_labels(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert _labels_in(deploy.containerize_command("room_price:abc", None, "docker", None, card={})) == {}
    monkeypatch.setattr(deploy, "bento_card", lambda tag: None)  # a Bento without a card.json
    assert _labels_in(deploy.containerize_command("room_price:abc", None, "docker", None)) == {}
    assert "no model card found in Bento room_price:abc" in capsys.readouterr().err


def test_containerize_command_reads_the_bentos_card_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """`modeldeploy release` builds its command without a card: the Bento's own card labels the image."""
    monkeypatch.setattr(deploy, "bento_card", lambda tag: CARD if tag == "room_price:abc" else None)
    cmd = deploy.containerize_command("room_price:abc", "m:v1", "buildah", None)
    assert _labels_in(cmd) == deploy.image_labels(CARD)


def test_containerize_runs_the_command_with_the_bentos_card(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(deploy, "choose_backend", lambda backend: "buildah")
    monkeypatch.setattr(deploy, "bento_card", lambda tag: CARD)
    monkeypatch.setattr(deploy, "bento_base_image", lambda tag: "localhost/modeldeploy/base:x")
    monkeypatch.setattr(deploy.subprocess, "call", lambda cmd: ran.append(cmd) or 0)
    assert deploy.containerize("room_price:abc", "m:v1") == 0
    assert _labels_in(ran[0])["io.modeldeploy.card.version"] == "5ff0e1224b29"


# --------------------------------------------------------------------------------------------
# modeldeploy status
# --------------------------------------------------------------------------------------------
def _obj(canary: bool) -> dict[str, Any]:
    st: dict[str, Any] = {"phase": "Progressing" if canary else "Healthy",
                          "stable": {"image": "m:v1", "bento": "m:v1", "hash": "h1",
                                     "card": ModelCard.from_card(CARD).model_dump(by_alias=True, mode="json")}}
    if canary:
        st["canary"] = {"image": "m:v2", "bento": "m:v2", "hash": "h2",
                        "card": ModelCard.from_card(card_v2()).model_dump(by_alias=True, mode="json")}
    return {"metadata": {"name": "m", "namespace": "ns"}, "spec": {"rollout": {"canary": {"steps": [10, 50]}}},
            "status": st}


def _table(out: str) -> list[str]:
    lines = out.splitlines()
    start = lines.index("  Model card:") + 1
    return [ln for ln in lines[start:] if ln.startswith("    ")][:14]


def test_status_shows_the_stable_card() -> None:
    rows = _table(render_status(_obj(canary=False)))
    assert rows[0].split() == ["FIELD", "STABLE"]
    cells = {r[4:17].strip(): r[17:].strip() for r in rows[1:]}
    assert cells["version"] == "5ff0e1224b29" and cells["kind"] == "ridge" and cells["runtime"] == "onnx"
    assert cells["R² (test)"] == "0.9911" and cells["RMSE (test)"] == "12.46" and cells["gate"] == "passed"
    assert cells["r2 >= 0.9"] == "0.9911 ok" and cells["rmse <= 15"] == "12.46 ok"
    assert cells["parity"] == "onnx max|diff| 4.96e-05 passed"
    assert cells["data hash"] == "sha256:77e624a530ae..."
    assert CARD["data_hash"] in render_status(_obj(canary=False), wide=True)


def test_status_shows_the_canary_card_beside_the_stables() -> None:
    rows = _table(render_status(_obj(canary=True)))
    assert rows[0].split() == ["FIELD", "STABLE", "CANARY"]
    canary_at = rows[0].index("CANARY")
    stable_at = rows[0].index("STABLE")
    by_field = {r[:stable_at].strip(): (r[stable_at:canary_at].strip(), r[canary_at:].strip()) for r in rows[1:]}
    assert by_field["version"] == ("5ff0e1224b29", "a1b2c3d4e5f6")
    assert by_field["kind"] == ("ridge", "forest")
    assert by_field["RMSE (test)"] == ("12.46", "18.25")
    assert by_field["parity"] == ("onnx max|diff| 4.96e-05 passed", "- (native model)")


def test_status_before_a_card_is_read() -> None:
    obj = _obj(canary=True)
    del obj["status"]["canary"]["card"]
    rows = _table(render_status(obj))
    assert rows[0].split() == ["FIELD", "STABLE", "CANARY"]
    assert all(r.rstrip().endswith("-") for r in rows[1:] if not r.strip().startswith(("parity", "data")))
    del obj["status"]["stable"]["card"]
    assert "  Model card: - (read from a ready pod's /metadata once one serves)" in render_status(obj)


def test_kube_list_asks_the_server_by_label_with_a_limit_and_timeout() -> None:
    from modeldeploy.k8s import Kube

    calls: list[tuple[Any, ...]] = []

    class Api:
        def call_api(self, path: str, method: str, **kw: Any) -> dict[str, Any]:
            calls.append((path, method, kw["query_params"], kw["_request_timeout"]))
            return {"items": [{"metadata": {"name": "p"}}, "junk"]}

    kube = Kube(Api())  # type: ignore[arg-type]
    assert kube.list("Pod", "ns", "a=b,c=d", limit=20, timeout=2.0) == [{"metadata": {"name": "p"}}]
    assert calls == [("/api/v1/namespaces/ns/pods", "GET", [("labelSelector", "a=b,c=d"), ("limit", "20")], 2.0)]


def test_with_a_pool_the_reconcile_never_waits_for_a_read_and_a_finished_read_queues_one() -> None:
    from concurrent.futures import ThreadPoolExecutor

    release, queued = threading.Event(), threading.Event()
    fetched: list[str] = []

    def slow_fetch(host: str, port: int) -> ModelCard:  # a pod that takes its time to answer
        fetched.append(host)
        assert release.wait(timeout=10)
        return ModelCard.from_card(CARD)

    md = with_stable()
    assert md.status.stable is not None
    with ThreadPoolExecutor(max_workers=2) as pool:
        reader = CardReader(FakeKube([pod("10.0.0.1")]), fetch=slow_fetch, pool=pool,  # type: ignore[arg-type]
                            on_read=lambda ns, name: queued.set() if (ns, name) == (md.namespace, md.name) else None)
        assert reader.cards(md) == {}  # returned at once: the read is in the pool
        assert reader.cards(md) == {}  # in flight: not asked a second time
        release.set()
        assert queued.wait(timeout=10)  # the finished read asks for a reconcile
        assert reader.cards(md) == {md.status.stable.hash: ModelCard.from_card(CARD)}
    assert fetched == ["10.0.0.1"]
