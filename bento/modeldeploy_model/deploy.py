"""From a built Bento to the cluster: ``bentoml containerize`` and the ModelDeployment manifest.

Why the manifest is generated with exactly the documented fields: the CRD (group
``modeldeploy.io/v1alpha1``) is owned by the operator side and validated by the API server, so we
emit only fields it defines - the optional ones (analysis) only when asked for - and the file
applies cleanly with ``kubectl apply``. It is validated with the operator's own API models
(``modeldeploy.api``), not rules of its own: a copy drifts (this one's interval regex once
rejected ``1m30s``, which the operator takes). Only what those models do not check in Python
stays here: the namespace and Bento tag shapes, and early checks of the options (the name and
image with the API's own rules, steps, thresholds) that name the option to fix.

Why containerize checks first: ``bentoml containerize`` needs a builder - a reachable Docker engine,
or buildah (daemonless, Debian's ``buildah`` package) - and, for its default base image, a container
registry; without one it fails deep in a build log. We pick the builder (Docker when an engine
answers, else buildah when installed) and say up front what is missing and how to get it.

Why the buildah options: buildah 1.28 spells "never pull" ``--pull-never`` (BentoML's
``--opt pull=never`` becomes ``--pull never``, which it rejects, and BentoML's ``--verbose`` adds
``--progress plain``, which it does not know); a Bento on a local base image (``localhost/...``,
see ``MODELDEPLOY_BASE_IMAGE`` in package.py) must never be pulled. Build steps use the host's
network and the host's CA bundle (pip and uv may reach PyPI through a TLS proxy whose CA only the
host trusts); ``--layers`` lets Bentos that differ only in their model share the big venv layer.

Why the image carries the model card as labels: an image found in a registry (or on a node) says
which model it serves, how it scored and whether it passed its gate, without running it. The card is
the Bento's model's card.json; ``io.modeldeploy.card`` holds its compact form (the operator's own
``ModelCard``, the same one ModelDeployment status shows) and ``io.modeldeploy.card.*`` the single
facts for ``buildah inspect`` / ``docker inspect --format``. BentoML passes ``--opt label=KEY=VALUE``
through to both builders as ``--label KEY=VALUE`` (one argument each, no shell).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modeldeploy.api import DNS_LABEL_RE, IMAGE_RULE, NAME_RULE, ModelCard, ModelDeployment

DNS1123 = re.compile(DNS_LABEL_RE)
# Where each field of the manifest comes from on the command line (API path prefix -> option).
_OPTION_FOR = {
    ("metadata",): "--name",
    ("spec", "model", "image"): "--image",
    ("spec", "model", "bento"): "--bento",
    ("spec", "model", "port"): "--port",
    ("spec", "replicas"): "--replicas",
    ("spec", "rollout", "strategy"): "--strategy",
    ("spec", "rollout", "canary", "steps"): "--steps",
    ("spec", "rollout", "canary", "interval"): "--interval",
    ("spec", "rollout", "analysis", "prometheus"): "--prometheus",
    ("spec", "rollout", "analysis", "metrics", 0): "--max-error-rate",
    ("spec", "rollout", "analysis", "metrics", 1): "--max-latency-p99",
    ("spec", "rollout", "analysis", "metrics", 2): "--max-drift",
}


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
    max_drift: float = 0.2  # prediction-drift's PSI threshold against the stable; 0: no drift check


def validate(opts: ManifestOptions) -> None:
    """Raise DeployError, naming the option and the fix, unless the manifest for `opts` is valid."""
    if not NAME_RULE.check(opts.name):
        raise DeployError(f"--name {opts.name!r} is not a valid Kubernetes name: {NAME_RULE.message}")
    if not DNS1123.match(opts.namespace):
        raise DeployError(f"--namespace {opts.namespace!r} is not a valid Kubernetes namespace name")
    if not IMAGE_RULE.check(opts.image):
        raise DeployError(f"--image {opts.image!r} must name the container image built from the Bento: "
                          f"{IMAGE_RULE.message}")
    if not opts.bento or ":" not in opts.bento:
        raise DeployError(f"--bento {opts.bento!r} must be a Bento tag NAME:VERSION (see `bentoml list`)")
    if opts.strategy == "Canary" and (not opts.steps or any(not 1 <= s <= 100 for s in opts.steps) or any(
            b <= a for a, b in zip(opts.steps, opts.steps[1:], strict=False))):
        raise DeployError(f"--steps {opts.steps}: traffic percentages must be strictly increasing, each in 1..100")
    if opts.prometheus:
        if not 0 <= opts.max_error_rate <= 1:
            raise DeployError("--max-error-rate must be a fraction in [0, 1]")
        if opts.max_latency_p99 <= 0:
            raise DeployError("--max-latency-p99 must be a positive number of seconds")
        if opts.max_drift < 0:
            raise DeployError("--max-drift must be a population stability index > 0 (0 leaves the drift check out)")
    validate_with_api(_manifest(opts))


def validate_with_api(manifest: dict[str, Any]) -> None:
    """The operator's own model of a ModelDeployment decides; its first error becomes a DeployError."""
    try:
        ModelDeployment.model_validate(manifest)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        option = next((o for prefix, o in _OPTION_FOR.items() if loc[:len(prefix)] == prefix), None)
        message = str(err["msg"]).removeprefix("Value error, ")
        where = ".".join(str(p) for p in loc)
        raise DeployError(f"{option or where} {err.get('input')!r}: {message}"
                          + (f" ({where})" if option else "")) from None


def build_manifest(opts: ManifestOptions) -> dict[str, Any]:
    validate(opts)
    return _manifest(opts)


def _manifest(opts: ManifestOptions) -> dict[str, Any]:
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
            if opts.max_drift > 0:
                rollout["analysis"]["metrics"].append({"name": "prediction-drift", "max": opts.max_drift})
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


BACKENDS = ("auto", "docker", "buildah")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def choose_backend(backend: str = "auto") -> str:
    """``docker`` or ``buildah`` for ``backend`` (``auto``: Docker if an engine answers, else buildah)."""
    if backend not in BACKENDS:
        raise DeployError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "buildah":
        if shutil.which("buildah") is None:
            raise DeployError("--backend buildah: no `buildah` command on PATH (Debian: `apt-get install -y buildah`)")
        return backend
    status = docker_status()
    if status.ok:
        return "docker"
    if backend == "auto" and shutil.which("buildah") is not None:
        return "buildah"
    raise DeployError(f"{status.problem}; or install buildah (Debian: `apt-get install -y buildah`) and use "
                      "`--backend buildah`")


def bento_base_image(bento_tag: str) -> str | None:
    """The base image a built Bento's Dockerfile starts from (None if it cannot be read)."""
    try:
        import bentoml

        image = getattr(bentoml.bentos.get(bento_tag).info, "image", None)
    except Exception:
        return None
    base = getattr(image, "base_image", None)
    return str(base) if base else None


def buildah_options(base_image: str | None) -> list[str]:
    """``bentoml containerize --backend buildah`` options that work with buildah 1.28 (see the docstring)."""
    opts = ["--opt", "network=host", "--opt", "layers"]
    if base_image and base_image.startswith("localhost/"):
        opts += ["--opt", "pull-never"]
    if Path(CA_BUNDLE).is_file():
        opts += ["--opt", f"volume={CA_BUNDLE}:{CA_BUNDLE}:ro"]
    return opts


LABEL_PREFIX = "io.modeldeploy.card"


def _num(x: float | None, digits: int = 6) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def image_labels(card: dict[str, Any]) -> dict[str, str]:
    """OCI image labels from a pipeline card.json: ``io.modeldeploy.card`` = the compact card as JSON,
    ``io.modeldeploy.card.<fact>`` = one fact each (facts the card does not record are left out)."""
    mc = ModelCard.from_card(card)
    facts: dict[str, str | None] = {
        "name": mc.name, "version": mc.version, "kind": mc.kind, "framework": mc.framework, "runtime": mc.runtime,
        "dataset": mc.dataset, "data-hash": mc.data_hash,
        "r2": None if mc.r2 is None else _num(mc.r2),
        "rmse": None if mc.rmse is None else _num(mc.rmse),
        "summary": mc.summary or None,
    }
    if mc.gate is not None:
        facts["gate"] = "passed" if mc.gate.passed else "failed"
        facts["gate-checks"] = "; ".join(f"{c.metric} {c.op} {_num(c.threshold)}: {_num(c.value)}"
                                         for c in mc.gate.checks) or None
    facts["parity"] = "native" if mc.parity is None else \
        f"{mc.parity.runtime} max_abs_diff={_num(mc.parity.max_abs_diff, 3)} passed={mc.parity.passed}"
    labels = {LABEL_PREFIX: json.dumps(mc.model_dump(by_alias=True, mode="json", exclude_none=True),
                                       separators=(",", ":"), ensure_ascii=False)}
    labels.update({f"{LABEL_PREFIX}.{k}": v for k, v in facts.items() if v})
    return labels


def label_options(labels: dict[str, str]) -> list[str]:
    """``bentoml containerize`` options setting each label (``--opt label=KEY=VALUE``)."""
    return [arg for k, v in labels.items() for arg in ("--opt", f"label={k}={v}")]


def bento_card(bento_tag: str) -> dict[str, Any] | None:
    """The card.json of the model inside a built Bento (None if it cannot be read)."""
    try:
        import bentoml

        bento = bentoml.bentos.get(bento_tag)
        for m in bento.info.models:
            # A Bento refers to its model in the model store (BentoML 1.4); an exported one holds a copy.
            inside = Path(bento.path) / "models" / m.tag.name / str(m.tag.version)
            where = inside if inside.is_dir() else Path(bentoml.models.get(m.tag).path)
            path = where / "card.json"
            if path.is_file():
                card = json.loads(path.read_text())
                return card if isinstance(card, dict) else None
    except Exception:
        return None
    return None


def containerize_command(bento_tag: str, image_tag: str | None, chosen: str, base_image: str | None,
                         extra_args: list[str] | None = None, card: dict[str, Any] | None = None) -> list[str]:
    """The ``bentoml containerize`` command line for an already chosen builder (``docker`` or ``buildah``),
    with the model card as image labels: `card` (None: the Bento's own card, see `bento_card`; {}: no labels)."""
    cmd = [sys.executable, "-m", "bentoml", "containerize", bento_tag, "--backend", chosen]
    if image_tag:
        cmd += ["-t", image_tag]
    if chosen == "buildah":
        cmd += buildah_options(base_image)
    if card is None:
        card = bento_card(bento_tag)
        if card is None:
            print(f"warning: no model card found in Bento {bento_tag}: the image gets no io.modeldeploy.card "
                  "labels", file=sys.stderr)
    if card:
        cmd += label_options(image_labels(card))
    return cmd + (extra_args or [])


def containerize(bento_tag: str, image_tag: str | None = None, extra_args: list[str] | None = None,
                 backend: str = "auto") -> int:
    """``bentoml containerize`` the Bento with Docker or buildah, its model card as image labels; returns
    the exit code."""
    try:
        chosen = choose_backend(backend)
    except DeployError as exc:
        raise DeployError(f"cannot containerize {bento_tag}: {exc}. The Bento itself is ready; run "
                          f"`bentoml containerize {bento_tag}` on a machine with a Docker engine or buildah "
                          "and access to the base image's registry.") from None
    base = bento_base_image(bento_tag) if chosen == "buildah" else None
    return subprocess.call(containerize_command(bento_tag, image_tag, chosen, base, extra_args))
