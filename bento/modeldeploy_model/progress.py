"""Progress of long work: one line per stage with its duration, bars for training and export.

Why a small object passed down instead of prints: the same stage functions run inside
``modeldeploy pipeline`` (where a person watches), from the stage commands and from tests and
library code (where nobody does). The caller decides: :data:`SILENT` (the default of every
function that takes one) prints nothing; ``Progress()`` writes to stderr, so stdout stays the
result summary a script can read. Bars are drawn with tqdm only when stderr is a terminal; in a
CI log they become a few plain lines (about every tenth of the work), never carriage returns.

TensorFlow prints its C++ start-up log (oneDNN notices, CPU feature hints) while it is imported.
Since TensorFlow 2.18 that goes through absl *before* absl's logging is initialised, straight to
file descriptor 2, and ``TF_CPP_MIN_LOG_LEVEL`` no longer holds it back; so
:func:`quiet_tensorflow` imports TensorFlow itself with fd 2 pointed at a temporary file, drops
what it said if the import worked and replays it if the import failed (the reason must not be
lost). Its Python side logs through absl and ``logging``, turned down to errors. It is called
right before every TensorFlow/Keras import of the pipeline; a user who set
``TF_CPP_MIN_LOG_LEVEL`` below 2 (to debug) gets the log.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

PREFIX = "[pipeline]"


def quiet_tensorflow() -> None:
    """Mute TensorFlow's start-up noise; call before ``import tensorflow`` / ``import keras``.

    A user who exported ``TF_CPP_MIN_LOG_LEVEL`` (e.g. 0 to debug) keeps their setting and the log.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO and WARNING after absl is initialised
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] >= "2" and "tensorflow" not in sys.modules:
        _import_without_stderr("tensorflow")
    for name in ("tensorflow", "absl", "tf2onnx", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(tensorflow|keras|tf2onnx)(\..*)?")
    try:
        import absl.logging  # present whenever TensorFlow is

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass


def _import_without_stderr(module: str) -> None:
    """Import ``module`` with fd 2 captured; replay the capture if the import fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            importlib.import_module(module)
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            os.write(2, capture.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextmanager
def root_logging_at(level: int) -> Iterator[None]:
    """Hold the root logger at ``level`` (libraries that log through ``logging.warning()`` directly)."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(before)


class Bar:
    """A progress bar (tqdm on a terminal) or plain lines at about every tenth of ``total``."""

    def __init__(self, progress: Progress, total: int, desc: str) -> None:
        self._progress = progress
        self.total = max(int(total), 1)
        self.desc = desc
        self.done = 0
        self._next_line = 0.1
        self._tqdm: Any = None
        if progress.enabled and progress.tty:
            from tqdm import tqdm

            # tqdm draws nothing on a terminal that reports no size (0x0, e.g. a bare pty): fall back.
            size = shutil.get_terminal_size((100, 24))
            self._tqdm = tqdm(total=self.total, desc=f"{PREFIX} {desc}", file=progress.stream, leave=False,
                              ncols=min(size.columns, 120), nrows=max(size.lines, 2))

    def update(self, n: int = 1, info: str = "") -> None:
        self.done = min(self.done + n, self.total)
        if not self._progress.enabled:
            return
        if self._tqdm is not None:
            if info:
                self._tqdm.set_postfix_str(info, refresh=False)
            self._tqdm.update(n)
        elif self.done / self.total >= self._next_line - 1e-9 or self.done == self.total:
            while self._next_line <= self.done / self.total + 1e-9:
                self._next_line += 0.1
            self._progress.line(f"{self.desc} {self.done}/{self.total}" + (f" ({info})" if info else ""))

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Progress:
    """Where progress goes: ``enabled=False`` is silence, else lines (and bars on a TTY) on ``stream``."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.timings: dict[str, float] = {}

    def line(self, text: str) -> None:
        if self.enabled:
            print(f"{PREFIX} {text}", file=self.stream, flush=True)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """``[pipeline] NAME: start`` ... ``[pipeline] NAME: done in 1.2 s`` (or ``failed after``)."""
        self.line(f"{name}: start")
        t0 = time.perf_counter()
        try:
            yield
        except BaseException:
            self.timings[name] = time.perf_counter() - t0
            self.line(f"{name}: failed after {self.timings[name]:.1f} s")
            raise
        self.timings[name] = time.perf_counter() - t0
        self.line(f"{name}: done in {self.timings[name]:.1f} s")

    def bar(self, total: int, desc: str) -> Bar:
        return Bar(self, total, desc)


SILENT = Progress(enabled=False)
