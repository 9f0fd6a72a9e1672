"""Exit codes of the `modeldeploy` CLI (both halves), in one place so scripts and CI can rely on them.

Why a table of its own: `modeldeploy status NAME && next-step` must stop on a rolled-back or
degraded rollout, a CI job must tell a failed quality gate from a crash, and a watch that timed
out must not look like success. The README's CLI section documents the same table.

    0    ok; status: Healthy, Progressing, Paused or Pending
    1    error (API or network failure, missing object, bad input file, ...)
    2    usage (bad flags or arguments: argparse's own code)
    3    quality gate failed (the model was not exported or packaged)
    4    status: RolledBack
    5    status: Degraded
    6    status: Failed
    7    status --watch: timed out before the rollout ended
    130  interrupted (Ctrl-C)

`modeldeploy release` (train to production, following the canary) uses the same codes for how
the release ended: 0 promoted (Healthy, the released revision stable), 1 any other stage failed
(build, load, apply, ...), 3 quality gate failed (nothing was built or deployed), 4 rolled back,
5 Degraded, 6 Failed, 7 the follow timed out (the rollout goes on).
"""

from __future__ import annotations

import sys

OK = 0
ERROR = 1
USAGE = 2
GATE_FAILED = 3
ROLLED_BACK = 4
DEGRADED = 5
FAILED = 6
WATCH_TIMEOUT = 7
INTERRUPTED = 130

# Phase name (api.Phase values) -> exit code; a phase not listed (Healthy, Progressing, Paused,
# Pending, or one from a newer operator) is 0.
PHASE_CODES = {"RolledBack": ROLLED_BACK, "Degraded": DEGRADED, "Failed": FAILED}


def for_phase(phase: str | None) -> int:
    """The exit code `modeldeploy status` returns for an object in this phase."""
    return PHASE_CODES.get(phase or "", OK)


class CLIError(Exception):
    """A failure the user must act on: printed as one line (no traceback), exits with `code`."""

    def __init__(self, message: str, code: int = ERROR) -> None:
        super().__init__(message)
        self.code = code


def error(message: str) -> None:
    """Print one error line the way every command does."""
    print(f"error: {message}", file=sys.stderr)
