"""From a built Bento to the cluster: ``bentoml containerize`` and the ModelDeployment manifest.

Why the manifest is generated with exactly the documented fields: the CRD (group
``modeldeploy.io/v1alpha1``) is owned by the operator side and validated by the API server, so we
emit only fields it defines - the optional ones (analysis) only when asked for - and the file
applies cleanly with ``kubectl apply``.

Why containerize checks first: ``bentoml containerize`` needs a reachable Docker engine (and, for
its default base image, a container registry); without one it fails deep in a build log. We say
up front what is missing and how to get it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import yaml

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
INTERVAL = re.compile(r"^[0-9]+(ms|s|m|h)$")


class DeployError(Exception):
    pass


@dataclass
class ManifestOptions:
    name: str
    image: str
    bento: str
    namespace: str = "default"
    port: int = 3000
    replicas: int = 2
    strategy: str = "Canary"
    steps: list[int] = field(default_factory=lambda: [10, 25, 50])
    interval: str = "30s"
    prometheus: str | None = None
    max_error_rate: float = 0.01
    max_latency_p99: float = 0.5


def validate(opts: ManifestOptions) -> None:
    if len(opts.name) > 63 or not DNS1123.match(opts.name):
        raise DeployError(f"--name {opts.name!r} is not a valid Kubernetes name: use lowercase letters, digits and "
                          "'-', starting and ending with a letter or digit, at most 63 characters")
    if not DNS1123.match(opts.namespace):
        raise DeployError(f"--namespace {opts.namespace!r} is not a valid Kubernetes namespace name")
    if not opts.image or any(c.isspace() for c in opts.image):
        raise DeployError("--image must name the container image built from the Bento, "
                          "e.g. registry.example/room-price:2f1c")
    if not opts.bento or ":" not in opts.bento:
        raise DeployError(f"--bento {opts.bento!r} must be a Bento tag NAME:VERSION (see `bentoml list`)")
    if not 1 <= opts.port <= 65535:
        raise DeployError(f"--port {opts.port} is not a TCP port (1..65535)")
    if opts.replicas < 0:
        raise DeployError(f"--replicas {opts.replicas} must be >= 0")
    if opts.strategy not in ("Canary", "Rolling"):
        raise DeployError(f"--strategy {opts.strategy!r}: choose Canary or Rolling")
    if opts.strategy == "Canary":
        if not opts.steps or any(not 1 <= s <= 100 for s in opts.steps) or any(
                b <= a for a, b in zip(opts.steps, opts.steps[1:], strict=False)):
            raise DeployError(f"--steps {opts.steps}: traffic percentages must be strictly increasing, each in 1..100")
        if not INTERVAL.match(opts.interval):
            raise DeployError(f"--interval {opts.interval!r}: write a duration like 30s, 2m or 1h")
    if not 0 <= opts.max_error_rate <= 1:
        raise DeployError("--max-error-rate must be a fraction in [0, 1]")
    if opts.max_latency_p99 <= 0:
        raise DeployError("--max-latency-p99 must be a positive number of seconds")


def build_manifest(opts: ManifestOptions) -> dict[str, Any]:
    validate(opts)
    rollout: dict[str, Any] = {"strategy": opts.strategy}
    if opts.strategy == "Canary":
        rollout["canary"] = {"steps": list(opts.steps), "interval": opts.interval}
        if opts.prometheus:
            rollout["analysis"] = {
                "prometheus": {"address": opts.prometheus},
                "metrics": [
                    {"name": "error-rate", "max": opts.max_error_rate},
                    {"name": "latency-p99", "max": opts.max_latency_p99},
                ],
            }
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": opts.name, "namespace": opts.namespace},
        "spec": {
            "model": {"image": opts.image, "bento": opts.bento, "port": opts.port},
            "replicas": opts.replicas,
            "rollout": rollout,
        },
    }


def render(manifest: dict[str, Any]) -> str:
    return yaml.safe_dump(manifest, sort_keys=False)


@dataclass
class DockerStatus:
    ok: bool
    problem: str = ""


def docker_status(timeout: float = 15.0) -> DockerStatus:
    docker = shutil.which("docker")
    if docker is None:
        return DockerStatus(False, "no `docker` command on PATH: install a Docker engine (Debian: "
                                   "`apt-get install -y docker.io`, then start `dockerd`)")
    try:
        proc = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return DockerStatus(False, f"`docker info` did not answer within {timeout:.0f}s: is dockerd running?")
    if proc.returncode != 0 or not proc.stdout.strip():
        err = (proc.stderr or proc.stdout).strip().splitlines()
        return DockerStatus(False, "the docker CLI is installed but no Docker engine answers ("
                                   + (err[-1] if err else "no output")
                                   + "): start `dockerd` (or point DOCKER_HOST at a running engine)")
    return DockerStatus(True)


def containerize(bento_tag: str, image_tag: str | None = None, extra_args: list[str] | None = None) -> int:
    status = docker_status()
    if not status.ok:
        raise DeployError(f"cannot containerize {bento_tag}: {status.problem}. The Bento itself is ready; "
                          f"run `bentoml containerize {bento_tag}` on a machine with a Docker engine and "
                          "access to the base image's registry.")
    cmd = [sys.executable, "-m", "bentoml", "containerize", bento_tag]
    if image_tag:
        cmd += ["-t", image_tag]
    cmd += extra_args or []
    return subprocess.call(cmd)
