"""`modeldeploy release` on the real node: the real command, from training to a promoted canary.

A ModelDeployment runs v1 (2 pods, analysed by the Prometheus that discovers them, load through its
Service). The command trains and gates a new model, exports it, packages a Bento on the local base
image, builds the image with buildah into the store hack/images.py uses, imports it into the node's
containerd, patches spec.model and follows the canary to its end. It must exit 0 with the released
Bento as status.stable, keep the object's own rollout settings, and every request through the
Service must have been answered while it happened.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from canarylab import ServiceLoad
from localcluster import LocalCluster
from localprom import PrometheusServer
from tests.conftest import wait_for
from tests.e2e.conftest import REPO, Images, RealCluster
from tests.integration.test_operator import mdep

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.prometheus, pytest.mark.slow]

IMAGE_REPO = "localhost/modeldeploy/room-price"
# Train, gate, export and package take seconds; the image build reuses the test models' cached venv layer
# (same requirements, same base) but may need minutes on a cold cache; the canary itself about a minute.
RELEASE_TIMEOUT = 1200
FOLLOW_TIMEOUT = "6m"


def release_env(kubeconfig: str) -> dict[str, str]:
    """What hack/images.py gives its own Bento builds (buildah store, BentoML home), plus the cluster."""
    from images import BENTOML_HOME, STORE

    env = STORE.env()  # CONTAINERS_STORAGE_CONF: the store the base image is in
    env["BENTOML_HOME"] = str(BENTOML_HOME)
    env["BENTOML_DO_NOT_TRACK"] = "True"
    env["KUBECONFIG"] = kubeconfig
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MODELDEPLOY_BASE_IMAGE", None)  # the command is given --base-image
    return env


@pytest.mark.timeout(RELEASE_TIMEOUT + 600)
def test_release_trains_builds_loads_and_promotes_through_the_canary(
        rk: RealCluster, node_images: Images, prometheus_sd: PrometheusServer, cluster: LocalCluster,
        kubeconfig: str, tmp_path: Path) -> None:
    from images import base_image

    analysis = {"prometheus": {"address": prometheus_sd.url, "timeout": "2s"}, "minRequests": 10,
                "failureLimit": 1, "errorLimit": 2,
                "metrics": [{"name": "error-rate", "max": 0.05}, {"name": "latency-p99", "max": 0.3}]}
    rollout = {"strategy": "Canary", "canary": {"steps": [25, 50], "interval": "5s"}, "analysis": analysis}
    rk.create(mdep("price", model=node_images.model("v1"), rollout=rollout))
    wait_for(lambda: rk.healthy("price"), 180, what="price v1 Healthy")
    wait_for(lambda: len([t for t in prometheus_sd.discovered(namespace=rk.ns, modeldeploy_io_name="price")
                          if t["health"] == "up"]) == 2, 60, what="both v1 pods discovered and scraped")
    before = rk.get("price")["spec"]
    base = base_image()  # cached since node_images built the images on it
    # 20 requests a second through the Service for the whole release (bounded in time and count).
    load = ServiceLoad(rk.wait_service_answers("price"), rate_per_second=20, max_seconds=RELEASE_TIMEOUT + 60,
                       max_requests=30000).start()
    socket = cluster.real_node().socket
    cmd = [str(REPO / ".venv" / "bin" / "modeldeploy"), "release",
           "--workdir", str(tmp_path / "work"), "--models", "ridge", "--samples", "600", "--seed", "7",
           "--gate", "r2>=0.5", "--name", "price", "-n", rk.ns, "--kubeconfig", kubeconfig,
           "--image", IMAGE_REPO, "--base-image", base, "--backend", "buildah",
           "--load", f"containerd={socket}", "--timeout", FOLLOW_TIMEOUT]
    t_start = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=release_env(kubeconfig), capture_output=True, text=True,
                              timeout=RELEASE_TIMEOUT, stdin=subprocess.DEVNULL)
    finally:
        t_end = time.monotonic()
        load.stop()
    out = proc.stdout
    assert proc.returncode == 0, (f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{proc.stderr[-4000:]}\n"
                                  f"status: {rk.status('price')}\nevents:\n{rk.events_text()}")
    print(f"\n{out}released in {t_end - t_start:.1f}s")

    # The stages, in order, each with its summary line; follow printed the rollout as it went.
    stage_names = list(dict.fromkeys(m.group(1) for m in re.finditer(r"^\[\d/8\] (\w+): ", out, re.M)))
    assert stage_names == ["train", "gate", "export", "package", "image", "load", "apply", "follow"], out
    assert re.search(r"^\[2/8\] gate: passed \(r2 [0-9.]+ >= 0.5\)", out, re.M), out
    assert re.search(r"^\[8/8\] follow: Progressing step 1/2 weight \d+%", out, re.M), out
    version_m = re.search(r"model version ([0-9a-f]{12})", out)
    bento_m = re.search(r"^\[4/8\] package: bento (room_price:\w+)", out, re.M)
    assert version_m and bento_m, out
    version, bento = version_m.group(1), bento_m.group(1)
    image = f"{IMAGE_REPO}:{version}"
    assert out.rstrip().splitlines()[-1].startswith(f"released: promoted {bento} in "), out
    assert f"[7/8] apply: patched spec.model of {rk.ns}/price to {bento}" in out
    assert f"into containerd at {socket}" in out

    # The cluster agrees: the released Bento is stable; only spec.model's image and bento changed.
    obj = rk.get("price")
    st = obj["status"]
    assert st["phase"] == "Healthy" and st.get("canary") is None, st
    assert st["stable"]["bento"] == bento and st["stable"]["image"] == image, st["stable"]
    assert st["history"][0]["revision"]["bento"] == "room_price:v1" and st["history"][0]["result"] == "Superseded", \
        st["history"]
    expected = {**before, "model": {**before["model"], "image": image, "bento": bento}}
    assert obj["spec"] == expected
    reasons = [e.reason for e in rk.events("price")]
    assert "CanaryStarted" in reasons and "Promoted" in reasons, reasons

    # Traffic: nothing failed during the release, and the new model answers afterwards.
    assert load.failures(since=t_start) == {}, load.by_version(since=t_start)
    wait_for(lambda: {p.status.container_statuses[0].image.rsplit(":", 1)[-1]
                      for p in rk.ready_pods("modeldeploy.io/name=price")} == {version}, 120,
             what="only the released model's pods")
    after = ServiceLoad(rk.service_url("price"), max_seconds=30, max_requests=60).start()
    try:
        wait_for(lambda: len(after.window()) >= 40, 40, what="40 answers after the promotion")
    finally:
        after.stop()
    assert set(after.by_version()) == {version}, after.by_version()
