"""The pipeline's report: one HTML page with PNG figures, built from a work directory.

Why from the work directory only: every stage already records its numbers (``results/*.json``)
and the arrays worth drawing (``results/*.npz``: test predictions, the export candidates'
predictions, SHAP values), so the report needs no model, no TensorFlow and no recomputation -
``modeldeploy report --workdir DIR`` rebuilds it in about a second, and a failed gate still gets
one (it shows why). Parts whose stage has not run are named with the command that produces them.

Why PNGs beside the HTML, referenced relatively: the page is self-contained (no scripts, styles
or fonts from the network; it opens from ``file://``, from a CI artifact or a copied directory)
and each figure is also a file one can attach to a review. Figures are drawn on matplotlib's
Agg canvas directly (no pyplot, no display, no global figure state).
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# Arrays the report draws, written by the stages beside their JSON records (in WORKDIR/results/).
PREDICTIONS_FILE = "predictions.npz"  # evaluate: y_test and every trained model's test predictions
EXPORT_PREDICTIONS_FILE = "export_predictions.npz"  # export: the selected model's native/ONNX/int8 predictions
SHAP_FILE = "shap.npz"  # explain: the explained rows, their attributions and the feature names
REPORT_DIR = "report"
INDEX = "index.html"
FIGURE_SIZE = (6.0, 4.2)
FIGURE_DPI = 100


class ReportError(ValueError):
    """The work directory has nothing to report yet; the message says what to run."""


# --- inputs ------------------------------------------------------------------------------------


# Written after the evaluation: one older than results/evaluate.json is from an earlier run (say
# the gate passed then and failed now) and must not be shown as this model's.
_AFTER_EVALUATE = {"export.json", "explain.json", "timings.json", EXPORT_PREDICTIONS_FILE, SHAP_FILE}


def _fresh(workdir: Path, path: Path) -> bool:
    if not path.is_file():
        return False
    evaluated = workdir / "results" / "evaluate.json"
    return (path.name not in _AFTER_EVALUATE or not evaluated.is_file()
            or path.stat().st_mtime_ns >= evaluated.stat().st_mtime_ns)


def _json(workdir: Path, stage: str) -> dict[str, Any] | None:
    path = workdir / "results" / f"{stage}.json"
    return json.loads(path.read_text()) if _fresh(workdir, path) else None


def _arrays(workdir: Path, name: str) -> dict[str, np.ndarray] | None:
    path = workdir / "results" / name
    if not _fresh(workdir, path):
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# --- figures -----------------------------------------------------------------------------------


def _figure(ncols: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(FIGURE_SIZE[0] * (1 + 0.6 * (ncols - 1)), FIGURE_SIZE[1]), dpi=FIGURE_DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _identity_line(ax: Any, a: np.ndarray, b: np.ndarray) -> None:
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    ax.plot([lo, hi], [lo, hi], color="0.4", lw=1, ls="--", label="y = x")


def fig_predicted_vs_actual(y: np.ndarray, pred: np.ndarray, kind: str) -> Any:
    fig, (ax,) = _figure()
    ax.scatter(y, pred, s=12, alpha=0.6, color="tab:blue", edgecolors="none")
    _identity_line(ax, y, pred)
    ax.set(xlabel="actual", ylabel=f"predicted ({kind})", title=f"Predicted vs actual, test split ({len(y)} rows)")
    ax.legend(loc="upper left")
    return fig


def fig_residuals(y: np.ndarray, pred: np.ndarray, kind: str) -> Any:
    fig, (ax, hist) = _figure(2)
    res = pred - y
    ax.scatter(pred, res, s=12, alpha=0.6, color="tab:orange", edgecolors="none")
    ax.axhline(0, color="0.4", lw=1, ls="--")
    ax.set(xlabel=f"predicted ({kind})", ylabel="residual (predicted - actual)", title="Residuals vs predicted")
    hist.hist(res, bins=30, color="tab:orange", alpha=0.8)
    hist.set(xlabel="residual", ylabel="rows", title=f"Residuals: mean {res.mean():.3g}, std {res.std():.3g}")
    return fig


def fig_shap_summary(rows: np.ndarray, values: np.ndarray, names: list[str]) -> Any:
    """A beeswarm-like summary: one line per feature (most important on top), colour = feature value."""
    order = np.argsort(np.abs(values).mean(axis=0))  # least important first = bottom
    fig, (ax,) = _figure()
    rng = np.random.default_rng(0)
    points = None
    for pos, j in enumerate(order):
        col = rows[:, j]
        span = float(col.max() - col.min()) or 1.0
        jitter = rng.uniform(-0.25, 0.25, size=len(col))
        points = ax.scatter(values[:, j], pos + jitter, c=(col - col.min()) / span, cmap="coolwarm", vmin=0, vmax=1,
                            s=12, alpha=0.8, edgecolors="none")
    ax.axvline(0, color="0.4", lw=1)
    ax.set_yticks(range(len(order)), [names[j] for j in order])
    ax.set(xlabel="SHAP value (impact on the prediction)", title=f"SHAP summary ({len(rows)} test rows)")
    if points is not None:
        bar = fig.colorbar(points, ax=ax, ticks=[0, 1])
        bar.ax.set_yticklabels(["low", "high"])
        bar.set_label("feature value")
    return fig


def fig_onnx_parity(preds: dict[str, np.ndarray], native: str) -> Any:
    others = [rt for rt in ("onnx", "onnx-int8") if rt in preds]
    fig, axes = _figure(len(others))
    for ax, rt in zip(axes, others, strict=True):
        diff = float(np.max(np.abs(preds[rt] - preds[native])))
        ax.scatter(preds[native], preds[rt], s=12, alpha=0.6, color="tab:green", edgecolors="none")
        _identity_line(ax, preds[native], preds[rt])
        ax.set(xlabel=f"{native} prediction", ylabel=f"{rt} prediction",
               title=f"{rt} vs {native}: max |diff| {diff:.3g}")
    return fig


# --- HTML --------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: .25em .8em; border: 1px solid #ccc; }
th { background: #f3f3f3; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #126b12; font-weight: bold; } .fail { color: #b00020; font-weight: bold; }
.missing { color: #777; font-style: italic; } figure { margin: 1em 0; } img { max-width: 100%; }
"""


def _table(header: list[str], rows: list[list[str]], numeric: tuple[int, ...] = (1,)) -> str:
    """An HTML table; cells are HTML already (escape text before); columns in ``numeric`` align right."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdict(passed: bool) -> str:
    return '<span class="pass">pass</span>' if passed else '<span class="fail">FAIL</span>'


def _missing(what: str, command: str) -> str:
    return f'<p class="missing">No {html.escape(what)} yet: run <code>{html.escape(command)}</code>.</p>'


def _gate_section(ev: dict[str, Any]) -> str:
    gate = ev["gate"]
    if not gate["checks"]:
        return "<p>No thresholds were given (<code>--gate METRIC&gt;=VALUE</code>).</p>"
    rows = [[html.escape(c["metric"]), f"{c['value']:.4g}", html.escape(f"{c['op']} {c['threshold']:g}"),
             _verdict(c["passed"])] for c in gate["checks"]]
    overall = _verdict(gate["passed"])
    return f"<p>Quality gate on the {html.escape(gate['split'])} split: {overall}</p>" + _table(
        ["metric", "value", "threshold", "pass/fail"], rows)


def _scores_section(ev: dict[str, Any]) -> str:
    rows = []
    for kind, by_split in sorted(ev["scores"].items()):
        for split in ("val", "test"):
            m = by_split[split]
            mark = " (selected)" if kind == ev["selected"] else ""
            rows.append([html.escape(kind + mark), split] + [f"{m[k]:.4g}" for k in ("rmse", "mae", "r2")])
    return _table(["model", "split", "rmse", "mae", "r2"], rows, numeric=(2, 3, 4))


def _export_section(ex: dict[str, Any]) -> str:
    rows = [[html.escape(p["runtime"]), f"{p['max_abs_diff']:.3g}", f"{p['tolerance_abs']:.3g}",
             f"{p['rmse_relative_delta']:.3%}", _verdict(p["passed"]) + (f" {html.escape(p['reason'])}" if p["reason"]
                                                                         else "")]
            for p in ex["parity"]]
    out = _table(["runtime", "max |diff| vs native", "tolerance", "RMSE change", "parity"], rows,
                 numeric=(1, 2, 3)) if rows else ""
    lat = [[html.escape(x["runtime"])] + [f"{x[k]:.3f}" for k in ("row_p50_ms", "row_p99_ms", "batch256_p50_ms")]
           for x in ex["latency"]]
    out += _table(["runtime", "1 row p50 ms", "1 row p99 ms", "256 rows p50 ms"], lat, numeric=(1, 2, 3))
    for rt, err in ex["errors"].items():
        out += f"<p>Not exported: <b>{html.escape(rt)}</b>: {html.escape(err)}</p>"
    return out + f"<p>Serving runtime: <b>{html.escape(ex['chosen_runtime'])}</b> (fastest that passed parity).</p>"


def _img(name: str, alt: str) -> str:
    alt = html.escape(alt)
    return f'<figure><img src="{html.escape(name)}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'


class _Page:
    """Collects sections and writes figures into the report directory as it goes."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.parts: list[str] = []
        self.figures: list[str] = []

    def section(self, title: str, body: str) -> None:
        self.parts.append(f"<h2>{html.escape(title)}</h2>{body}")

    def figure(self, name: str, alt: str, draw: Callable[[], Any]) -> str:
        fig = draw()
        fig.savefig(self.out / name, format="png")
        self.figures.append(name)
        return _img(name, alt)


def build_report(workdir: Path) -> Path:
    """Write ``WORKDIR/report/index.html`` and its PNGs; returns the HTML's path."""
    ev = _json(workdir, "evaluate")
    if ev is None:
        raise ReportError(f"{workdir / 'results' / 'evaluate.json'} not found: run "
                          f"`modeldeploy pipeline --workdir {workdir}` (or train and evaluate) first")
    out = workdir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()  # a figure whose stage no longer has data must not linger
    page = _Page(out)
    kind = ev["selected"]
    preds = _arrays(workdir, PREDICTIONS_FILE)
    if preds is not None and kind in preds:
        y, p = preds["y_test"], preds[kind]
        page.section("Predicted vs actual", page.figure("predicted_vs_actual.png", f"predicted vs actual ({kind})",
                                                        lambda: fig_predicted_vs_actual(y, p, kind)))
        page.section("Residuals", page.figure("residuals.png", f"residuals ({kind})",
                                              lambda: fig_residuals(y, p, kind)))
    page.section("Models (selected by validation " + ev["selection_metric"] + ")", _scores_section(ev))
    page.section("Quality gate", _gate_section(ev))
    page.section("SHAP summary", _shap_body(workdir, page))
    page.section("ONNX parity", _parity_body(workdir, page))
    timings = _json(workdir, "timings")
    if timings:
        rows = [[html.escape(k), f"{v:.1f}"] for k, v in timings["stages"]]
        page.section("Stages", _table(["stage", "seconds"], rows))
    path = out / INDEX
    path.write_text(_html(workdir, ev, page))
    return path


def _shap_body(workdir: Path, page: _Page) -> str:
    shap = _arrays(workdir, SHAP_FILE)
    explain = _json(workdir, "explain")
    if shap is None or explain is None:
        return _missing("SHAP values", f"modeldeploy explain --workdir {workdir}")
    names = [str(n) for n in shap["feature_names"]]
    body = page.figure("shap_summary.png", "SHAP summary",
                       lambda: fig_shap_summary(shap["rows"], shap["values"], names))
    imp = [[html.escape(k), f"{v:.4g}"] for k, v in explain["importance"].items()]
    note = f"{html.escape(explain['explainer'])}, additivity error {explain['max_additivity_error']:.2g}"
    return f"{body}<p>{note}</p>" + _table(["feature", "mean |SHAP|"], imp)


def _parity_body(workdir: Path, page: _Page) -> str:
    ex = _json(workdir, "export")
    preds = _arrays(workdir, EXPORT_PREDICTIONS_FILE)
    if ex is None or preds is None:
        return _missing("export", f"modeldeploy export --workdir {workdir}")
    native = ex["candidates"][0]
    body = ""
    if any(rt in preds for rt in ("onnx", "onnx-int8")):
        body = page.figure("onnx_parity.png", "ONNX predictions vs the native model's",
                           lambda: fig_onnx_parity(preds, native))
    return body + _export_section(ex)


def _html(workdir: Path, ev: dict[str, Any], page: _Page) -> str:
    data = _json(workdir, "data") or {}
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    facts = (f"data set <b>{html.escape(str(data.get('dataset', '?')))}</b> "
             f"({data.get('n_train', '?')}/{data.get('n_val', '?')}/{data.get('n_test', '?')} rows train/val/test, "
             f"<code>{html.escape(str(data.get('data_hash', '?'))[:23])}</code>), selected model "
             f"<b>{html.escape(ev['selected'])}</b>, gate {_verdict(ev['gate']['passed'])}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>modeldeploy pipeline report</title>'
            f"<style>{_CSS}</style></head><body><h1>modeldeploy pipeline report</h1>"
            f"<p>{facts}. Written {created} from <code>{html.escape(str(workdir))}</code>.</p>"
            + "".join(page.parts) + "</body></html>\n")
