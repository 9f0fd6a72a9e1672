"""The README works as written: every shell block in it is run here, or says why it is not.

A newcomer copies the README's commands into a shell on a fresh clone, with nothing of ours on PATH. So
each ```sh block is preceded by a marker:

    <!-- readme: NAME -->           run by test_the_readme_runs_as_written, in FLOW order, in one bash
    <!-- readme: skip: WHY -->      not run here; WHY names what it needs (a registry, Argo CD, ...) and
                                    the test that covers the same commands instead

The blocks in FLOW run verbatim, in one `bash -euo pipefail` with the system PATH only (no .venv/bin):
the README itself must say what to put on PATH. They build the local cluster with a real node, train and
serve a model, install the operator with Helm and drive a ModelDeployment with the CLI, then put the
machine back. The first screen's `make demo` runs too (test_first_screen_demo); `make test` is the command
that runs this file.

It runs in its own pytest session (the Makefile runs it after the other tiers): it starts the local
cluster by `make cluster-up`, as the README says, and only one real node can exist on a machine.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MARKER = re.compile(r"<!-- readme: (?:skip: (?P<why>.+?)|(?P<name>[a-z0-9-]+)) -->")

# The blocks run, in this order, as one script.
FLOW = ("cluster-up", "pipeline", "install-helm", "apply-model", "prometheus-secret", "cli", "uninstall",
        "cluster-down")
# What the flow leaves in the checkout, removed afterwards (and refused beforehand: a user's own files).
ARTEFACTS = ("work", ".bentoml", "room-price.yaml")
# What the flow must show on its way (regular expressions over its stdout).
EXPECTED = (r"report: \S*work/report/index.html", r'"predictions": ?\[', r"modeldeploy-node +Ready",
            r"room-price +Healthy")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = [pytest.mark.node, pytest.mark.slow]


def shell_blocks(text: str) -> list[tuple[int, str | None, str | None, str]]:
    """(line, name, skip reason, body) of every ```sh block; name and reason None when unmarked."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        if lines[i].strip() in ("```sh", "```bash", "```shell", "```console"):
            start, prev = i, next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
            m = MARKER.fullmatch(prev.strip())
            j = lines.index("```", i + 1)
            out.append((start + 1, m and m.group("name"), m and m.group("why"), "\n".join(lines[i + 1:j])))
            i = j
        i += 1
    return out


def test_every_block_is_run_or_says_why() -> None:
    blocks = shell_blocks(README.read_text())
    unmarked = [line for line, name, why, _ in blocks if name is None and why is None]
    assert not unmarked, f"README.md: shell blocks at lines {unmarked} have no <!-- readme: ... --> marker"
    names = [name for _, name, _, _ in blocks if name]
    assert sorted(names) == sorted(FLOW), f"README blocks {names} differ from FLOW {FLOW}"
    assert all(len(why) >= 20 for _, _, why, _ in blocks if why), "a skip reason must say what it needs"


def test_the_marker_parser_sees_unmarked_and_skipped_blocks() -> None:
    text = ("x\n<!-- readme: a -->\n```sh\necho a\n```\n\n```sh\necho b\n```\n"
            "<!-- readme: skip: needs X -->\n```sh\nc\n```\n")
    assert [(n, w, b) for _, n, w, b in shell_blocks(text)] == [("a", None, "echo a"), (None, None, "echo b"),
                                                               (None, "needs X", "c")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def clean_checkout() -> object:
    """Refuse to run over a user's cluster or files; remove what the flow made, even when it fails."""
    if (REPO / ".local" / "cluster" / "state.json").exists():
        pytest.fail("a local cluster's state is in .local/cluster: run `make cluster-down` first (this test starts "
                    "and stops its own, as the README says)")
    present = [a for a in ARTEFACTS if (REPO / a).exists()]
    if present:
        pytest.fail(f"{present} exist in the checkout: the README flow writes them; move them away first")
    try:
        yield
    finally:
        if (REPO / ".local" / "cluster" / "state.json").exists():
            subprocess.run(["make", "cluster-down"], cwd=REPO, capture_output=True)
        for a in ARTEFACTS:
            path = REPO / a
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def test_the_readme_runs_as_written(clean_checkout: object, tmp_path: Path) -> None:
    blocks = {name: body for _, name, _, body in shell_blocks(README.read_text()) if name}
    script = "\n".join(f"echo '### readme: {name}'\n{blocks[name]}" for name in FLOW)
    (tmp_path / "readme.sh").write_text(script)
    env = {"PATH": SYSTEM_PATH, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
           "PORT": str(_free_port()), "TMPDIR": str(tmp_path)}
    # Output to files, not pipes: a server the README forgot to stop must fail the test, not hang it.
    with open(tmp_path / "stdout", "w") as so, open(tmp_path / "stderr", "w") as se:
        proc = subprocess.Popen(["bash", "-euo", "pipefail", str(tmp_path / "readme.sh")], cwd=REPO, env=env,
                                stdout=so, stderr=se, start_new_session=True)
        try:
            code = proc.wait(timeout=1200)
        finally:
            left = _kill_session(proc.pid)
    stdout, stderr = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    assert code == 0, f"README flow failed:\n{stdout[-6000:]}\n{stderr[-6000:]}"
    assert not left, f"the README's commands left processes running: {left}"
    for name in FLOW:
        assert f"### readme: {name}" in stdout
    for expected in EXPECTED:
        assert re.search(expected, stdout), f"README flow did not print {expected!r}:\n{stdout[-6000:]}"
    assert "cluster: down" in stdout and "LEFT ON THE MACHINE" not in stdout


def _kill_session(sid: int) -> list[str]:
    """Kill what is left of session `sid` (bash and anything it started in the background); return their commands."""
    left = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.getsid(int(proc.name)) == sid:
                left.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120])
                os.kill(int(proc.name), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            continue
    return left


def test_first_screen_demo() -> None:
    """`make demo`, the first screen's main job, tells its whole story and leaves the machine as it was."""
    if (REPO / ".local" / "cluster" / "state.json").exists():
        pytest.fail("a local cluster's state is in .local/cluster: run `make cluster-down` first")
    out = subprocess.run(["make", "demo"], cwd=REPO, env={"PATH": SYSTEM_PATH, "HOME": os.environ.get("HOME", "/root"),
                                                         "LANG": "C.UTF-8"},
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, f"{out.stdout[-6000:]}\n{out.stderr[-4000:]}"
    for expected in ("rolled back", "promoted", "rolled back by prediction drift", "machine as it was: yes"):
        assert expected in out.stdout, f"make demo did not say {expected!r}:\n{out.stdout[-4000:]}"
