"""Baseline checks on the real node: the canary judged against the stable over the same window.

What no fixed-threshold canary catches, and what it gets wrong:
- v4 answers 200 OK as fast as v1 and predicts 60 % high (trained on labels scaled by a bug): the
  prediction-drift check (PSI of the canary's predictions against the stable's) rolls it back;
- a stable-wide incident (both tracks failing 20 % of requests, as when a dependency they share is
  down) does not roll back a healthy canary judged by maxIncrease;
- a canary failing 80 % of requests is rolled back long before minRequests requests have arrived;
- a healthy canary passes the same checks and is promoted.
The numbers each test prints (requests seen, seconds to decide) are the closing note's.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from modeldeploy.rollout.engine import parse_time
from tests.conftest import wait_for
from tests.e2e.conftest import Images, RealCluster
from tests.e2e.test_canary import scenario  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.prometheus, pytest.mark.slow]

INCIDENT = [{"name": "MODELDEPLOY_FAULT_ERROR_RATE", "value": "0.2"}]
FAILING = [{"name": "MODELDEPLOY_FAULT_ERROR_RATE", "value": "0.8"}]


def decided(rk: RealCluster, image_suffix: str) -> bool:
    st = rk.status("price")
    return st.get("phase") in ("RolledBack", "Failed") or (
        st.get("phase") == "Healthy" and st.get("stable", {}).get("image", "").endswith(image_suffix))


def record(st: dict[str, Any], metric: str, verdict: str | None = None) -> dict[str, Any]:
    found = [a for a in st.get("lastAnalysis", []) if a["metric"] == metric and verdict in (None, a["verdict"])]
    assert found, f"no {metric} {verdict or ''} record in {st.get('lastAnalysis')}"
    return found[0]


def seconds_since_window(st: dict[str, Any], rec: dict[str, Any]) -> float | None:
    began = [parse_time(t["time"]) for t in st.get("timeline", []) if t["verdict"] == "Started"]
    decided_at = parse_time(rec["time"])
    return (decided_at - began[-1]).total_seconds() if began and began[-1] and decided_at else None


def test_a_model_that_answers_200_ok_with_shifted_predictions_is_rolled_back_by_drift(
        rk: RealCluster, scenario: Any, node_images: Images) -> None:  # noqa: F811
    load = scenario(analysis={"metrics": [{"name": "error-rate", "max": 0.05},
                                          {"name": "prediction-drift", "max": 0.2}]},
                    canary={"steps": [25, 50], "interval": "30s"})
    t0 = time.monotonic()
    rk.patch("price", {"model": node_images.model("v4")})
    wait_for(lambda: decided(rk, ":v4"), 150, what="v4 promoted or rolled back")
    elapsed = time.monotonic() - t0
    st = rk.status("price")
    assert st["phase"] == "RolledBack", st.get("message")
    drift = record(st, "prediction-drift", "Fail")
    assert drift["value"] > 0.2 and drift["max"] == 0.2 and drift["confidence"] >= 0.99, drift
    assert "prediction-drift" in st["message"] and "PSI" in st["message"]
    event = [e.message for e in rk.events("price") if e.reason == "RolledBack"]
    assert event and "prediction-drift" in event[-1] and "above 0.2" in event[-1], event
    v4 = load.by_version().get(node_images.versions["v4"], {})
    assert v4.get("ok", 0) > 0 and v4.get("failed", 0) == 0, load.by_version()  # every answer was 200 OK
    n = re.search(r"over (\d+) canary predictions", drift["message"])
    print(f"\nv4 rolled back {elapsed:.1f}s after the apply, {seconds_since_window(st, drift)}s after the canary "
          f"started; PSI {drift['value']:.3g} on {n.group(1) if n else '?'} canary predictions "
          f"(early: {drift['early']}); v4 answered {v4.get('ok')} requests, all 200 OK")


def test_a_stable_wide_incident_does_not_roll_back_a_healthy_canary(
        rk: RealCluster, scenario: Any, node_images: Images) -> None:  # noqa: F811
    scenario(model=node_images.model("v1", env=INCIDENT),
             analysis={"minRequests": 20, "inconclusiveLimit": 20,
                       "metrics": [{"name": "error-rate", "maxIncrease": 0.1}]},
             canary={"steps": [50], "interval": "15s"})
    rk.patch("price", {"model": node_images.model("v3", env=INCIDENT)})
    wait_for(lambda: decided(rk, ":v3"), 300, what="v3 promoted or rolled back")
    st = rk.status("price")
    assert st["phase"] == "Healthy", st.get("message")
    passed = [a for h in [st.get("lastAnalysis", [])] for a in h
              if a["metric"] == "error-rate-vs-stable" and a["verdict"] == "Pass"]
    assert passed, st.get("lastAnalysis")
    # The incident was real: the stable itself failed far above any fixed threshold a user would set.
    assert passed[0]["baseline"] > 0.1 and passed[0]["confidence"] >= 0.8, passed[0]
    print(f"\nincident: stable error rate {passed[0]['baseline']:.3f}, canary {passed[0]['value']:+.3f} against it; "
          f"{passed[0]['message']}")


def test_a_canary_failing_80_percent_is_rolled_back_with_fewer_than_min_requests(
        rk: RealCluster, scenario: Any, node_images: Images) -> None:  # noqa: F811
    scenario(analysis={"minRequests": 200, "metrics": [{"name": "error-rate", "maxIncrease": 0.05}]},
             canary={"steps": [25, 50], "interval": "60s"})
    rk.patch("price", {"model": node_images.model("v2", env=FAILING)})
    wait_for(lambda: decided(rk, ":v2"), 120, what="v2 rolled back")
    st = rk.status("price")
    assert st["phase"] == "RolledBack", st.get("message")
    rec = record(st, "error-rate-vs-stable", "Fail")
    m = re.search(r"canary [\d.e-]+ \((\d+) of (\d+)\)", rec["message"])
    assert m, rec["message"]
    failed, seen = int(m.group(1)), int(m.group(2))
    assert seen < 200 and rec["confidence"] >= 0.99 and rec["value"] > 0.05, rec
    print(f"\n80 % failing canary rolled back on {seen} requests ({failed} failed; minRequests 200), "
          f"{seconds_since_window(st, rec)}s after it started; {rec['message']}")


def test_a_healthy_canary_passes_the_baseline_checks_and_is_promoted(
        rk: RealCluster, scenario: Any, node_images: Images) -> None:  # noqa: F811
    scenario(analysis={"metrics": [{"name": "error-rate", "max": 0.05, "maxIncrease": 0.02},
                                   {"name": "prediction-drift", "max": 0.2}]},
             canary={"steps": [25, 50], "interval": "15s"})
    # The model card, read by the in-cluster operator from a v1 pod's /metadata, is on the stable revision.
    wait_for(lambda: (rk.status("price").get("stable") or {}).get("card"), 60, what="the stable's model card")
    assert rk.status("price")["stable"]["card"]["version"] == node_images.versions["v1"]
    rk.patch("price", {"model": node_images.model("v3")})
    # During the canary its own card stands beside the stable's.
    during: dict[str, Any] = {}

    def canary_card() -> bool:
        during.update(rk.status("price"))
        return bool((during.get("canary") or {}).get("card"))

    wait_for(canary_card, 90, what="the canary's model card while it runs")
    assert during["canary"]["card"]["version"] == node_images.versions["v3"], during["canary"]
    assert during["stable"]["card"]["version"] == node_images.versions["v1"]
    wait_for(lambda: decided(rk, ":v3"), 240, what="v3 promoted or rolled back")
    st = rk.status("price")
    assert st["phase"] == "Healthy", st.get("message")
    assert st["stable"]["card"]["version"] == node_images.versions["v3"]  # the promoted canary's card
    assert st["stable"]["card"]["gate"]["passed"] is True and st["stable"]["card"]["summary"]
    for metric in ("error-rate-vs-stable", "prediction-drift"):
        rec = record(st, metric, "Pass")
        assert rec["confidence"] >= 0.8, rec
    print(f"\nv3 promoted: {record(st, 'prediction-drift', 'Pass')['message']}")
