"""Package: BentoML model store + ``bentoml build``, with the model card as the Bento's metadata.

Why the model is saved as a whole artifact directory (not through a framework saver): one
generic service serves every runtime (scikit-learn, Keras, ONNX, int8 ONNX), and the card, SHAP
background and exports must travel together. The Bento refers to its model through the alias
``modeldeploy-model``, so the same service code finds it in any Bento.

The build context is generated (the service package's ``.py`` files plus this build's options)
and ``lock_packages`` is off: ``bentoml build`` must not touch the network. Requirements are the
versions installed here, pinned, so ``bentoml containerize`` reproduces this environment.

Why a base image can be given (``base_image=`` or ``MODELDEPLOY_BASE_IMAGE``): where no container
registry is reachable the image is built on a local base (hack/images.py builds a Debian bookworm
one with Python 3.11, ``localhost/modeldeploy/base:...``). Its Python must be the version the Bento
asks for (this interpreter's), so ``uv venv`` uses it instead of downloading one. On such a base we
also drop the apt step BentoML adds to every Debian image (build-essential, git, gnupg2: ~120 MB
and a Debian mirror at build time): every requirement here installs from a wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from modeldeploy_model import config, runtime

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

PACKAGE_DIR = Path(__file__).resolve().parent
SERVICE = "modeldeploy_model.service:ModelService"
ENV_BASE_IMAGE = "MODELDEPLOY_BASE_IMAGE"
# The command BentoML 1.4 puts first in ``image.commands`` of every Debian-based Bento.
BENTOML_APT_STEP = "apt-get update && apt-get install"


class PackageError(Exception):
    pass


@dataclass
class PackageResult:
    model_tag: str
    bento_tag: str | None
    bento_path: str | None
    labels: dict[str, str]
    bentofile: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bento_labels(card: dict[str, Any]) -> dict[str, str]:
    """Short, string-valued facts from the card (Bento labels are flat strings)."""
    test = card.get("evaluation", {}).get("metrics", {}).get("test", {})
    parity = {p["runtime"]: p for p in card.get("export", {}).get("parity", [])}
    chosen = parity.get(card.get("runtime", ""))
    labels = {
        "model_name": str(card.get("name")),
        "model_version": str(card.get("version")),
        "model_kind": str(card.get("kind")),
        "runtime": str(card.get("runtime")),
        "dataset": str(card.get("dataset")),
        "data_hash": str(card.get("data_hash")),
        "gate": "passed" if card.get("gate", {}).get("passed") else "failed",
        "test_rmse": f"{test.get('rmse', float('nan')):.6g}",
        "test_r2": f"{test.get('r2', float('nan')):.6g}",
        "parity": (f"{chosen['runtime']} max_abs_diff={chosen['max_abs_diff']:.3g} passed={chosen['passed']}"
                   if chosen else "native runtime (no export)"),
    }
    for k, v in card.get("versions", {}).items():
        labels[f"version_{k.replace('-', '_')}"] = str(v)
    return labels


def requirements(card: dict[str, Any]) -> list[str]:
    names = ["numpy", "scikit-learn", "joblib", "onnxruntime", "shap", "pyyaml", "uvloop", "httptools"]
    if card.get("framework") == "keras":
        names += ["tensorflow-cpu"]
    out = []
    for n in names:
        try:
            out.append(f"{n}=={metadata.version(n)}")
        except metadata.PackageNotFoundError:
            out.append(n)
    return out


def description(card: dict[str, Any]) -> str:
    return (
        f"# {card.get('name')} {card.get('version')}\n\n"
        f"Served by `{SERVICE}` (modeldeploy). Model card:\n\n```json\n"
        + json.dumps(card, indent=2, default=float)
        + "\n```\n"
    )


def save_model(artifact_dir: Path, name: str = config.DEFAULT_MODEL_NAME) -> str:
    """Copy the artifact into BentoML's model store as ``NAME:VERSION``; reuse it if already there."""
    import bentoml
    from bentoml.exceptions import NotFound

    card = runtime.load_card(artifact_dir)
    if not card.get("gate", {}).get("passed", False):
        raise PackageError("the model failed its quality gate (card.json gate.passed is false); not packaging it")
    tag = f"{name}:{card['version']}"
    try:
        return str(bentoml.models.get(tag).tag)
    except NotFound:
        pass
    meta = {"card_json": json.dumps(card, default=float)}  # metadata values must be plain types, no None
    with bentoml.models.create(tag, labels=bento_labels(card), metadata=meta) as model:
        for item in Path(artifact_dir).iterdir():
            if item.is_file():
                shutil.copy2(item, Path(model.path) / item.name)
    return tag


def build_options(model_tag: str, card: dict[str, Any], name: str, base_image: str | None = None) -> dict[str, Any]:
    opts = {
        "service": SERVICE,
        "name": name,
        "labels": bento_labels(card),
        "description": description(card),
        "include": ["modeldeploy_model/*.py"],
        "models": [{"tag": model_tag, "alias": config.BENTO_MODEL_ALIAS}],
        "python": {"packages": requirements(card), "lock_packages": False},
    }
    if base_image:
        opts["docker"] = {"base_image": base_image}
    return opts


def drop_apt_step(bento_path: Path) -> bool:
    """Remove BentoML's default apt step from a built Bento's image commands; True if it was there."""
    manifest = Path(bento_path) / "bento.yaml"
    info = yaml.safe_load(manifest.read_text())
    image = info.get("image") or {}
    commands = image.get("commands") or []
    kept = [c for c in commands if not (c.startswith(BENTOML_APT_STEP) and "build-essential" in c)]
    if kept == commands:
        return False
    image["commands"] = kept
    manifest.write_text(yaml.safe_dump(info, sort_keys=False))
    return True


def build_bento(model_tag: str, card: dict[str, Any], name: str, keep_ctx: Path | None = None,
                base_image: str | None = None) -> tuple[Any, Path]:
    """Generate a build context with the service code and run ``bentoml build`` on it."""
    import bentoml

    ctx = Path(tempfile.mkdtemp(prefix="modeldeploy-bento-"))
    try:
        pkg = ctx / "modeldeploy_model"
        pkg.mkdir()
        for f in PACKAGE_DIR.glob("*.py"):
            shutil.copy2(f, pkg / f.name)
        opts = build_options(model_tag, card, name, base_image)
        (ctx / "bentofile.yaml").write_text(yaml.safe_dump(opts, sort_keys=False))
        bento = bentoml.bentos.build(
            SERVICE,
            name=name,
            labels=opts["labels"],
            description=opts["description"],
            include=opts["include"],
            models=opts["models"],
            python=opts["python"],
            docker=opts.get("docker"),
            build_ctx=str(ctx),
        )
        if base_image:
            drop_apt_step(Path(bento.path))
        bentofile = ctx / "bentofile.yaml"
        if keep_ctx is not None:
            keep_ctx.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(bentofile, keep_ctx)
            bentofile = keep_ctx
        return bento, bentofile
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


def package(artifact_dir: Path, name: str = config.DEFAULT_MODEL_NAME, build: bool = True,
            base_image: str | None = None) -> PackageResult:
    """Save the artifact as a BentoML model and (unless ``build=False``) build a Bento around it.

    ``base_image`` (default: ``$MODELDEPLOY_BASE_IMAGE``) replaces BentoML's default base image.
    """
    card = runtime.load_card(artifact_dir)
    tag = save_model(artifact_dir, name)
    if not build:
        return PackageResult(tag, None, None, bento_labels(card), None)
    base_image = base_image or os.environ.get(ENV_BASE_IMAGE) or None
    keep = Path(artifact_dir).parent / "bentofile.yaml"
    bento, bentofile = build_bento(tag, card, name, keep_ctx=keep, base_image=base_image)
    return PackageResult(tag, str(bento.tag), str(bento.path), bento_labels(card), str(bentofile))
