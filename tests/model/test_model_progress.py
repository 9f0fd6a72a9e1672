"""Long work shows itself: stage lines with durations, bars on a terminal, silence with --quiet,
and no TensorFlow start-up noise on the Keras path."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modeldeploy.cli import main
from modeldeploy_model import data
from modeldeploy_model.progress import Progress
from modeldeploy_model.train import TrainOptions, train_model

REPO = Path(__file__).resolve().parents[2]
STAGE = re.compile(r"^\[pipeline\] (\w+): (start|done in \d+\.\d s)$")


def _stage_events(stderr: str) -> list[tuple[str, str]]:
    return [(m.group(1), "start" if m.group(2) == "start" else "done")
            for m in (STAGE.match(line) for line in stderr.splitlines()) if m]


def test_each_stage_starts_and_ends_in_order_with_its_duration(tmp_path, capsys):
    rc = main(["pipeline", "--workdir", str(tmp_path / "w"), "--samples", "300", "--models", "ridge,forest",
               "--no-package"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    stages = ["data", "train", "evaluate", "export", "explain", "report"]
    assert _stage_events(err) == [(s, ev) for s in stages for ev in ("start", "done")]
    lines = err.splitlines()
    # the forest's bar, as plain lines (stderr is not a terminal here), inside the train stage
    forest = [i for i, line in enumerate(lines) if line.startswith("[pipeline] train forest: trees ")]
    assert forest and lines.index("[pipeline] train: start") < forest[0] < forest[-1] < next(
        i for i, line in enumerate(lines) if line.startswith("[pipeline] train: done"))
    assert lines[forest[-1]] == "[pipeline] train forest: trees 60/60"
    fitted = [re.sub(r"\d+\.\d", "N", line) for line in lines if " fitted in " in line]
    assert fitted == ["[pipeline] train: ridge fitted in N s", "[pipeline] train: forest fitted in N s"]
    assert next(i for i, line in enumerate(lines) if "forest fitted" in line) > forest[-1]  # after its bar
    assert 3 <= len(forest) <= 11  # about every tenth, not a line per tree
    assert any(line.startswith("[pipeline] export: step 5/5") for line in lines)  # export's bar (int8 too)
    assert "report: " in out and "[pipeline]" not in out  # progress on stderr, the summary on stdout


def test_quiet_prints_no_progress(tmp_path, capsys):
    rc = main(["pipeline", "--workdir", str(tmp_path / "w"), "--samples", "300", "--models", "ridge",
               "--no-package", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert err == ""
    assert "quality gate" in out and "serving runtime" in out


BAR_ON_A_TERMINAL = """
import time
from modeldeploy_model.progress import Progress
p = Progress()
with p.bar(20, "train keras: epoch") as bar:
    for _ in range(20):
        time.sleep(0.02)
        bar.update(1, "loss 1.0")
p.line("after")
"""


def _run_on_a_pty(code: str, timeout: float = 60) -> str:
    """Run ``code`` with stderr on a fresh pseudo-terminal (size 0x0, as a bare pty has); return what it drew."""
    import select
    import time

    master, slave = os.openpty()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO / "bento")])}
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=slave, env=env)
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed its end
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        proc.kill()
        proc.wait(timeout=10)
    return out.decode(errors="replace")


def test_bar_is_tqdm_on_a_terminal_and_tenths_otherwise():
    drawn = _run_on_a_pty(BAR_ON_A_TERMINAL)
    assert "[pipeline] train keras: epoch: 100%" in drawn and "20/20" in drawn and "loss 1.0" in drawn  # tqdm
    assert "epoch 4/20" not in drawn  # no plain lines on a terminal
    assert drawn.rstrip().endswith("\r[pipeline] after")  # the bar is cleared, the next line starts clean
    log = io.StringIO()
    with Progress(stream=log).bar(40, "train keras: epoch") as bar:
        for _ in range(40):
            bar.update(1, "loss 1.0")
    assert "\r" not in log.getvalue()
    assert log.getvalue().splitlines() == [f"[pipeline] train keras: epoch {n}/40 (loss 1.0)" for n in range(4, 41, 4)]
    silent = io.StringIO()
    with Progress(enabled=False, stream=silent).stage("x"), Progress(enabled=False, stream=silent).bar(5, "y") as b:
        b.update(5)
    assert silent.getvalue() == ""


def test_failed_stage_says_so_with_its_duration():
    log = io.StringIO()
    p = Progress(stream=log)
    with pytest.raises(RuntimeError), p.stage("export"):
        raise RuntimeError("boom")
    assert re.fullmatch(r"\[pipeline\] export: start\n\[pipeline\] export: failed after \d+\.\d s\n", log.getvalue())


@pytest.mark.parametrize("kind", ["forest", "gbt"])
def test_a_bar_does_not_change_the_model(kind):
    """Stepped fitting (warm_start) for the bar must give exactly the model one fit() gives."""
    sp = data.split(data.room_price(300, seed=3), seed=3)
    opts = TrainOptions(n_estimators=25, max_iter=30)
    plain = train_model(kind, sp, opts)
    stepped = train_model(kind, sp, opts, Progress(stream=io.StringIO()))
    assert np.array_equal(plain.predict(sp.X_test), stepped.predict(sp.X_test))
    assert stepped.params == plain.params  # warm_start is reset, the step count restored


def test_keras_path_has_no_tensorflow_noise(tmp_path):
    """The CLI in a fresh process with nothing set: stderr carries only the pipeline's own lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "ABSL_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), str(REPO / "bento"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "modeldeploy.cli", "pipeline", "--workdir", str(tmp_path / "w"), "--samples", "300",
         "--models", "keras", "--epochs", "5", "--no-package"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    noise = [line for line in proc.stderr.splitlines() if not line.startswith("[pipeline] ")]
    assert noise == []
    assert [f"[pipeline] train keras: epoch {n}/5 (loss " in proc.stderr for n in range(1, 6)] == [True] * 5
    assert ("train", "done") in _stage_events(proc.stderr)
