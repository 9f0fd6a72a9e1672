"""The rollout CLI against the real cluster and operator: status, pause, resume, promote, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from kubernetes import client

from localoperator import OperatorProcess
from tests.conftest import wait_for
from tests.integration.test_operator import Cluster, mdep

pytestmark = pytest.mark.cluster


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modeldeploy.cli", *args], env=env, text=True, capture_output=True,
                          timeout=60)


def test_status_pause_resume_promote(api_client: client.ApiClient, namespace: str, operator: OperatorProcess,
                                    kube_env: dict[str, str]) -> None:
    k = Cluster(api_client, namespace)
    k.create(mdep("steer", rollout={"strategy": "Canary", "canary": {"steps": [10, 50], "interval": "10m"}}))
    wait_for(lambda: k.healthy("steer"), 60, what="v1 Healthy")
    out = cli(kube_env, "promote", "steer", "-n", namespace)
    assert out.returncode == 1 and "no canary in progress" in out.stderr

    k.patch("steer", {"model": {"image": "registry.example/room-price:v2", "bento": "room_price:v2"}})
    wait_for(lambda: k.get("steer").get("status", {}).get("canaryWeight", 0) > 0, 30, what="canary serving")
    out = cli(kube_env, "status", "steer", "-n", namespace)
    assert out.returncode == 0, out.stderr
    assert "Canary:    room_price:v2" in out.stdout and "step 1/2  target 10%" in out.stdout

    assert cli(kube_env, "pause", "steer", "-n", namespace).returncode == 0
    wait_for(lambda: k.get("steer")["status"]["phase"] == "Paused", 30, what="Paused")
    assert cli(kube_env, "resume", "steer", "-n", namespace).returncode == 0
    wait_for(lambda: k.get("steer")["status"]["phase"] == "Progressing", 30, what="Progressing again")

    out = cli(kube_env, "promote", "steer", "-n", namespace)
    assert out.returncode == 0 and "promote requested" in out.stdout
    wait_for(lambda: k.get("steer")["status"].get("stable", {}).get("bento") == "room_price:v2" and
             k.healthy("steer"), 60, what="promoted by the CLI")


def test_errors_name_the_problem_and_the_fix(namespace: str, kube_env: dict[str, str]) -> None:
    out = cli(kube_env, "status", "nope", "-n", namespace)
    assert out.returncode == 1 and f'modeldeployment "nope" not found in namespace "{namespace}"' in out.stderr
    assert "kubectl get mdep -A" in out.stderr
    env = {k: v for k, v in kube_env.items() if k != "KUBECONFIG"} | {"KUBECONFIG": "/nonexistent/kubeconfig",
                                                                       "HOME": "/nonexistent"}
    out = cli(env, "status", "x")
    assert out.returncode == 1 and "set KUBECONFIG" in out.stderr and "Traceback" not in out.stderr
