"""Fixtures for the model-side tests: a private BentoML home, small artifacts, served models.

BENTOML_HOME is pointed at a temporary directory before anything imports BentoML (BentoML reads it
once), so tests never touch ~/bentoml. Artifacts are small and trained once per session; every
server gets a free port on 127.0.0.1 and is stopped in teardown.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_BENTOML_HOME = Path(tempfile.mkdtemp(prefix="modeldeploy-test-bentoml-"))
os.environ["BENTOML_HOME"] = str(_BENTOML_HOME)
os.environ["BENTOML_DO_NOT_TRACK"] = "True"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session", autouse=True)
def _bentoml_home() -> Iterator[Path]:
    yield _BENTOML_HOME
    shutil.rmtree(_BENTOML_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ridge model on 400 synthetic rows (no TensorFlow), written as a servable artifact."""
    from modeldeploy_model.testing import build_test_artifact

    return build_test_artifact(tmp_path_factory.mktemp("tiny") / "artifact", version_seed=1)


@pytest.fixture(scope="module")
def server(tiny_artifact: Path):  # type: ignore[no-untyped-def]
    """`tiny_artifact` served by `bentoml serve` on a free port, for one test module."""
    from modeldeploy_model.testing import serve_subprocess

    s = serve_subprocess(tiny_artifact)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The whole pipeline once, on small data: ridge, forest and mlp, gated, exported, packaged."""
    from modeldeploy_model.evaluate import parse_threshold
    from modeldeploy_model.pipeline import PipelineConfig, run_pipeline
    from modeldeploy_model.train import TrainOptions

    cfg = PipelineConfig(
        workdir=tmp_path_factory.mktemp("pipeline") / "work",
        n_samples=600,
        kinds=("ridge", "forest", "mlp"),
        train=TrainOptions(n_estimators=30),
        thresholds=[parse_threshold("r2>=0.9"), parse_threshold("rmse<=30")],
        build=True,
    )
    return run_pipeline(cfg)
