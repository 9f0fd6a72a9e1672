"""The pipeline's HTML report, rendered by a real browser: every figure is there and decodes.

Headless Chromium loads the report from ``file://`` with name resolution and proxies pointed
nowhere (no network), runs a small probe appended to a *copy* of the page (the report itself has no
script) that records each ``<img>``'s ``naturalWidth`` after the load event and every resource
the page fetched, and dumps the DOM. A missing or corrupt PNG has ``naturalWidth`` 0, which the
second test proves by deleting one figure. Each Chromium runs with a private profile in tmp and
its whole process group is killed in teardown.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modeldeploy.cli import main
from modeldeploy_model.evaluate import parse_threshold
from modeldeploy_model.pipeline import PipelineConfig, run_pipeline
from modeldeploy_model.report import INDEX
from modeldeploy_model.train import TrainOptions

CHROMIUM = shutil.which("chromium")
FIGURES = {"predicted_vs_actual.png", "residuals.png", "shap_summary.png", "onnx_parity.png"}

PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({
    images: Array.from(document.images, (i) => ({src: i.getAttribute("src"), width: i.naturalWidth})),
    resources: performance.getEntriesByType("resource").map((e) => e.name),  // network fetches only
  });
  document.body.appendChild(out);
});
</script>"""

Render = Callable[[Path], dict]


@pytest.fixture(scope="module")
def report_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small pipeline run (ridge and mlp, so ONNX and int8 both exist), no BentoML packaging."""
    work = tmp_path_factory.mktemp("report") / "work"
    cfg = PipelineConfig(workdir=work, n_samples=400, kinds=("ridge", "mlp"), train=TrainOptions(),
                         thresholds=[parse_threshold("r2>=0.5"), parse_threshold("mae<=1000")], package=False)
    res = run_pipeline(cfg)
    assert res.report == work / "report" / INDEX
    return work


@pytest.fixture
def render(tmp_path: Path) -> Iterator[Render]:
    """Render a page with headless Chromium; returns what the probe recorded. Kills Chromium in teardown."""
    if CHROMIUM is None:
        pytest.fail("chromium is missing: `make setup` installs it (Debian package chromium)")
    started: list[subprocess.Popen[str]] = []

    def run(index: Path) -> dict:
        probe = index.with_name("probe.html")
        probe.write_text(index.read_text().replace("</body>", PROBE + "</body>"))
        profile = tmp_path / f"chromium-profile-{len(started)}"
        proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
             "--no-first-run", "--disable-extensions", "--disable-background-networking", "--disable-breakpad",
             "--disable-crash-reporter", "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
             "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        started.append(proc)
        out, err = proc.communicate(timeout=120)
        m = re.search(r'<pre id="probe">(.*?)</pre>', out, re.S)
        assert m, f"no probe output in the dumped DOM (exit {proc.returncode}): {err[-2000:]}"
        return json.loads(html.unescape(m.group(1)))

    yield run
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the browser, its zygotes, renderers and helpers
        proc.wait(timeout=10)


def broken_images(probe: dict) -> list[str]:
    return sorted(i["src"] for i in probe["images"] if i["width"] <= 0)


def test_report_renders_every_figure_offline(report_work: Path, render: Render) -> None:
    index = report_work / "report" / INDEX
    text = index.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), "the report must not reference the network"
    for needle in ("Predicted vs actual", "Residuals", "SHAP summary", "Quality gate", "ONNX parity",
                   "max |diff| vs native", "onnx-int8"):
        assert html.escape(needle) in text, needle
    stages = text[text.index("<h2>Stages</h2>"):]
    assert re.findall(r'<tr><td>(\w+)</td><td class="num">\d+\.\d</td></tr>', stages) == [
        "data", "train", "evaluate", "export", "explain"]  # durations in run order
    probe = render(index)
    assert {i["src"] for i in probe["images"]} == FIGURES
    assert broken_images(probe) == []
    # Chromium times only network fetches: any entry at all is a fetch the page must not make.
    assert probe["resources"] == []


def test_a_missing_figure_is_caught(report_work: Path, render: Render, tmp_path: Path) -> None:
    copy = tmp_path / "report"
    shutil.copytree(report_work / "report", copy)
    (copy / "residuals.png").unlink()
    assert broken_images(render(copy / INDEX)) == ["residuals.png"]


def test_gate_table_and_rebuild_from_the_work_directory(report_work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = report_work / "report" / INDEX
    for png in FIGURES:
        (index.parent / png).unlink()
    assert main(["report", "--workdir", str(report_work)]) == 0
    assert f"report: {index}" in capsys.readouterr().out
    assert {p.name for p in index.parent.glob("*.png")} == FIGURES
    page = index.read_text()
    assert "<th>metric</th><th>value</th><th>threshold</th><th>pass/fail</th>" in page
    assert re.search(r'<td>r2</td><td class="num">0\.\d+</td><td>&gt;= 0\.5</td><td><span class="pass">pass', page)
    assert re.search(r'<td>mae</td><td class="num">[\d.]+</td><td>&lt;= 1000</td><td><span class="pass">pass', page)


def test_failed_gate_still_gets_a_report_that_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "w"
    # an earlier, passing run in the same directory: its export and SHAP values must not show up below
    argv = ["pipeline", "--workdir", str(work), "--samples", "200", "--models", "ridge", "--no-package", "-q"]
    assert main(argv) == 0
    rc = main(["pipeline", "--workdir", str(work), "--samples", "200", "--models", "ridge", "--gate", "r2>=0.99999",
               "--gate", "rmse<=1000", "--no-package", "--quiet"])
    assert rc == 3
    out = capsys.readouterr().out
    assert f"report: {work / 'report' / INDEX}" in out
    page = (work / "report" / INDEX).read_text()
    gate = page[page.index("Quality gate"):]
    assert re.search(r"<td>r2</td><td class=\"num\">0\.\d+</td><td>&gt;= 0\.99999</td><td><span class=\"fail\">FAIL",
                     gate), gate[:800]
    assert re.search(r"<td>rmse</td>.*?<span class=\"pass\">pass", gate)
    assert "No export yet: run <code>modeldeploy export" in page
    assert {p.name for p in (work / "report").glob("*.png")} == {"predicted_vs_actual.png", "residuals.png"}


def test_report_without_a_run_says_what_to_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--workdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "evaluate.json not found" in err and "modeldeploy pipeline" in err and "Traceback" not in err
