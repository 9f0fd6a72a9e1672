"""The pipeline as library functions: one function per stage, each recording its result.

Why a work directory: every stage can be run on its own (``modeldeploy train`` then
``modeldeploy evaluate`` ...) or all together (``modeldeploy pipeline``), and every stage leaves a
JSON record under ``WORKDIR/results/`` that the next stage reads and the model card embeds. The
served artifact is ``WORKDIR/artifact/`` (layout in :mod:`modeldeploy_model.runtime`).

    WORKDIR/split.npz              the train/validation/test split (data stage)
    WORKDIR/models/<kind>/         every trained model (train stage)
    WORKDIR/artifact/              the selected model + exports + card.json (export/explain stages)
    WORKDIR/results/<stage>.json   what each stage decided, with numbers
    WORKDIR/results/*.npz          test-split predictions and SHAP values, for the report
    WORKDIR/report/index.html      the report: figures (PNG beside it) and tables (report stage)

``run_pipeline`` announces each stage on stderr as it starts and ends (``[pipeline] train: start``,
``[pipeline] train: done in 4.2 s``) through a :class:`~modeldeploy_model.progress.Progress`;
the stage functions are silent unless given one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import platform
import shutil
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from modeldeploy_model import config, data, runtime
from modeldeploy_model.evaluate import (
    GateFailed,
    GateResult,
    Threshold,
    apply_gate,
    regression_metrics,
    select_best,
)
from modeldeploy_model.export import ExportResult, accelerate
from modeldeploy_model.progress import SILENT, Progress
from modeldeploy_model.report import EXPORT_PREDICTIONS_FILE, PREDICTIONS_FILE, SHAP_FILE
from modeldeploy_model.train import TrainedModel, TrainOptions, train_model


class StageError(Exception):
    """A stage cannot run (missing input from an earlier stage); the message says which command to run."""


def _results_dir(workdir: Path) -> Path:
    d = workdir / "results"
    d.mkdir(parents=True, exist_ok=True)
    return d


def record(workdir: Path, stage: str, result: dict[str, Any]) -> Path:
    path = _results_dir(workdir) / f"{stage}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True, default=float))
    return path


def _save_arrays(workdir: Path, name: str, arrays: dict[str, Any]) -> None:
    """Arrays the report draws, beside the JSON records (see :mod:`modeldeploy_model.report`)."""
    np.savez(_results_dir(workdir) / name, **arrays)


def read_record(workdir: Path, stage: str, hint: str) -> dict[str, Any]:
    path = workdir / "results" / f"{stage}.json"
    if not path.is_file():
        raise StageError(f"{path} not found: run `{hint}` first")
    out: dict[str, Any] = json.loads(path.read_text())
    return out


def package_versions(framework: str | None = None) -> dict[str, str]:
    names = ["numpy", "scikit-learn", "onnx", "onnxruntime", "skl2onnx", "shap", "bentoml"]
    if framework == "keras":
        names += ["tensorflow-cpu", "tensorflow", "keras", "tf2onnx"]
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    with contextlib.suppress(metadata.PackageNotFoundError):
        out["modeldeploy"] = metadata.version("modeldeploy")
    return out


# --- data ------------------------------------------------------------------------------------


@dataclass
class DataResult:
    dataset: str
    seed: int
    n_train: int
    n_val: int
    n_test: int
    feature_names: list[str]
    target_name: str
    data_hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stage_data(workdir: Path, dataset: str = "room_price", n_samples: int = config.DEFAULT_ROOM_PRICE_SAMPLES,
               seed: int = config.DEFAULT_SEED, label_scale: float = 1.0) -> DataResult:
    workdir.mkdir(parents=True, exist_ok=True)
    ds = data.load(dataset, n_samples=n_samples, seed=seed)
    sp = data.split(ds if label_scale == 1.0 else data.scaled(ds, label_scale), seed=seed)
    sp.save(workdir / "split.npz")
    res = DataResult(sp.dataset, seed, len(sp.y_train), len(sp.y_val), len(sp.y_test), list(sp.feature_names),
                     sp.target_name, sp.data_hash)
    record(workdir, "data", res.to_dict())
    return res


def load_split(workdir: Path) -> data.Split:
    path = workdir / "split.npz"
    if not path.is_file():
        raise StageError(f"{path} not found: run `modeldeploy train --workdir {workdir}` (it prepares the data)")
    return data.Split.load(path)


# --- train -----------------------------------------------------------------------------------


@dataclass
class TrainResult:
    models: list[dict[str, Any]]
    options: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stage_train(workdir: Path, kinds: tuple[str, ...] = ("ridge", "forest"),
                opts: TrainOptions | None = None, progress: Progress = SILENT) -> TrainResult:
    opts = opts or TrainOptions()
    sp = load_split(workdir)
    models = []
    for kind in kinds:
        tm = train_model(kind, sp, opts, progress)
        progress.line(f"train: {kind} fitted in {tm.train_seconds:.1f} s")
        tm.save(workdir / "models" / kind)
        models.append({"kind": kind, "family": tm.family, "train_seconds": round(tm.train_seconds, 4),
                       "path": str(workdir / "models" / kind)})
    res = TrainResult(models, opts.to_dict())
    record(workdir, "train", res.to_dict())
    return res


# --- evaluate and gate -----------------------------------------------------------------------


@dataclass
class EvaluateResult:
    scores: dict[str, dict[str, dict[str, float]]]
    selection_metric: str
    selected: str
    gate: GateResult

    def to_dict(self) -> dict[str, Any]:
        return {"scores": self.scores, "selection_metric": self.selection_metric, "selected": self.selected,
                "gate": self.gate.to_dict()}


def stage_evaluate(workdir: Path, thresholds: list[Threshold] | None = None,
                   selection_metric: str = "rmse") -> EvaluateResult:
    """Score every trained model, select by validation, gate on test. Raises GateFailed (after recording)."""
    sp = load_split(workdir)
    train_rec = read_record(workdir, "train", f"modeldeploy train --workdir {workdir}")
    scores: dict[str, dict[str, dict[str, float]]] = {}
    test_predictions: dict[str, np.ndarray] = {}
    for m in train_rec["models"]:
        tm = TrainedModel.load(Path(m["path"]))
        test_predictions[m["kind"]] = tm.predict(sp.X_test)
        scores[m["kind"]] = {
            "val": regression_metrics(sp.y_val, tm.predict(sp.X_val)),
            "test": regression_metrics(sp.y_test, test_predictions[m["kind"]]),
        }
    _save_arrays(workdir, PREDICTIONS_FILE, {"y_test": sp.y_test, **test_predictions})
    best = select_best(scores, selection_metric)
    gate = apply_gate(scores[best]["test"], thresholds or [])
    res = EvaluateResult(scores, selection_metric, best, gate)
    record(workdir, "evaluate", res.to_dict())
    if not gate.passed:
        raise GateFailed(gate)
    return res


# --- export (accelerate / compress) ----------------------------------------------------------


def _quantile_buckets(values: np.ndarray, n: int = config.HISTOGRAM_BUCKETS) -> list[float]:
    qs = np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0, 1, n + 1)[1:-1])
    edges = sorted({round(float(q), 6) for q in qs})
    return edges or [float(np.median(values))]


def _model_version(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def stage_export(workdir: Path, quantize: bool = True, tolerance_abs: float | None = None,
                 name: str = config.DEFAULT_MODEL_NAME, progress: Progress = SILENT) -> ExportResult:
    """Build WORKDIR/artifact from the gated model: native file, ONNX/int8 if at parity, card."""
    ev = read_record(workdir, "evaluate", f"modeldeploy evaluate --workdir {workdir}")
    if not ev["gate"]["passed"]:
        raise StageError("the selected model failed the quality gate (see results/evaluate.json); not exporting it")
    sp = load_split(workdir)
    kind = ev["selected"]
    tm = TrainedModel.load(workdir / "models" / kind)
    staging = workdir / "artifact.staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    native_file = runtime.KERAS_FILE if tm.framework == "keras" else runtime.SKLEARN_FILE
    shutil.copy2(workdir / "models" / kind / native_file, staging / native_file)
    result = accelerate(tm, sp.X_test, sp.y_test, staging, quantize=quantize, tolerance_abs=tolerance_abs,
                        progress=progress)
    _save_arrays(workdir, EXPORT_PREDICTIONS_FILE, {"y_test": sp.y_test, **result.predictions})
    rng = np.random.default_rng(0)
    bg = sp.X_train[rng.choice(len(sp.X_train), size=min(100, len(sp.X_train)), replace=False)]
    np.save(staging / runtime.BACKGROUND_FILE, bg)
    data_rec = read_record(workdir, "data", f"modeldeploy train --workdir {workdir}")
    card = {
        "name": name,
        "version": _model_version(staging / native_file),
        "kind": kind,
        "family": tm.family,
        "framework": tm.framework,
        "dataset": sp.dataset,
        "data_hash": sp.data_hash,
        "data": data_rec,
        "target": {"name": sp.target_name, "buckets": _quantile_buckets(sp.y_train)},
        "features": [
            {"name": n, "min": float(sp.X_train[:, i].min()), "max": float(sp.X_train[:, i].max()),
             "mean": float(sp.X_train[:, i].mean()), "std": float(sp.X_train[:, i].std()),
             "buckets": _quantile_buckets(sp.X_train[:, i])}
            for i, n in enumerate(sp.feature_names)
        ],
        "runtime": result.chosen_runtime,
        "runtimes": [rt for rt in result.candidates],
        "evaluation": {"selected": kind, "selection_metric": ev["selection_metric"],
                       "metrics": ev["scores"][kind], "candidates": ev["scores"]},
        "gate": ev["gate"],
        "export": result.to_dict(),
        "train": {"seconds": tm.train_seconds, "params": tm.params},
        "versions": package_versions(tm.framework),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    (staging / runtime.CARD_FILE).write_text(json.dumps(card, indent=2, default=float))
    art = workdir / "artifact"
    if art.exists():
        shutil.rmtree(art)
    staging.rename(art)
    record(workdir, "export", result.to_dict())
    return result


# --- explain ---------------------------------------------------------------------------------


@dataclass
class ExplainResult:
    explainer: str
    rows: int
    importance: dict[str, float]
    max_additivity_error: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stage_explain(workdir: Path, rows: int = 50) -> ExplainResult:
    from modeldeploy_model.explain import from_artifact, global_importance

    art = workdir / "artifact"
    card = runtime.load_card(art)
    sp = load_split(workdir)
    att = from_artifact(art).explain(sp.X_test[:rows])
    total = np.asarray(att.base_values) + np.asarray(att.values).sum(axis=1)
    add_err = float(np.max(np.abs(total - np.asarray(att.predictions))))
    res = ExplainResult(att.explainer, len(att.values), global_importance(att), add_err)
    _save_arrays(workdir, SHAP_FILE, {"rows": sp.X_test[:rows], "values": np.asarray(att.values),
                                      "feature_names": np.asarray(att.feature_names)})
    card["explain"] = res.to_dict()
    (art / runtime.CARD_FILE).write_text(json.dumps(card, indent=2, default=float))
    record(workdir, "explain", res.to_dict())
    return res


# --- everything ------------------------------------------------------------------------------


@dataclass
class PipelineConfig:
    workdir: Path
    dataset: str = "room_price"
    n_samples: int = config.DEFAULT_ROOM_PRICE_SAMPLES
    seed: int = config.DEFAULT_SEED
    kinds: tuple[str, ...] = ("ridge", "forest")
    train: TrainOptions = field(default_factory=TrainOptions)
    thresholds: list[Threshold] = field(default_factory=list)
    selection_metric: str = "rmse"
    quantize: bool = True
    tolerance_abs: float | None = None
    explain: bool = True
    report: bool = True
    package: bool = True
    build: bool = True
    name: str = config.DEFAULT_MODEL_NAME
    base_image: str | None = None  # the Bento image's base (package.package; default $MODELDEPLOY_BASE_IMAGE)


@dataclass
class PipelineResult:
    data: DataResult
    train: TrainResult
    evaluate: EvaluateResult
    export: ExportResult
    explain: ExplainResult | None
    package: Any  # package.PackageResult | None (kept loose: BentoML is imported lazily)
    artifact_dir: Path
    report: Path | None = None


def stage_report(workdir: Path, timings: dict[str, float] | None = None) -> Path:
    """Write WORKDIR/report/index.html from the records and arrays the other stages left."""
    from modeldeploy_model.report import build_report

    if timings is not None:
        record(workdir, "timings", {"stages": [[k, round(v, 3)] for k, v in timings.items()]})  # in run order
    return build_report(workdir)


def run_pipeline(cfg: PipelineConfig, progress: Progress | None = None) -> PipelineResult:
    """All stages in order; raises GateFailed when the selected model misses a threshold.

    A failed gate still gets its report (the figures show why), then the exception propagates.
    ``progress`` (default: silent) also times the stages for the report, so each run starts its own.
    """
    progress = progress or Progress(enabled=False)
    progress.timings.clear()
    w = cfg.workdir
    with progress.stage("data"):
        d = stage_data(w, cfg.dataset, cfg.n_samples, cfg.seed)
    with progress.stage("train"):
        t = stage_train(w, cfg.kinds, cfg.train, progress)
    try:
        with progress.stage("evaluate"):
            e = stage_evaluate(w, cfg.thresholds, cfg.selection_metric)
    except GateFailed:
        if cfg.report:
            _report_stage(w, progress)
        raise
    with progress.stage("export"):
        x = stage_export(w, quantize=cfg.quantize, tolerance_abs=cfg.tolerance_abs, name=cfg.name, progress=progress)
    ex = None
    if cfg.explain:
        with progress.stage("explain"):
            ex = stage_explain(w)
    report = _report_stage(w, progress) if cfg.report else None
    pk = None
    if cfg.package:
        from modeldeploy_model.package import package

        with progress.stage("package"):
            pk = package(w / "artifact", name=cfg.name, build=cfg.build, base_image=cfg.base_image)
            record(w, "package", pk.to_dict())
    return PipelineResult(d, t, e, x, ex, pk, w / "artifact", report)


def _report_stage(workdir: Path, progress: Progress) -> Path:
    with progress.stage("report"):
        return stage_report(workdir, dict(progress.timings))
