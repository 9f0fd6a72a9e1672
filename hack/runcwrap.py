#!/usr/bin/python3
"""A runc that never asks for CAP_SYS_RESOURCE: dockerd's default runtime on hosts that lack it.

Why: some machines drop CAP_SYS_RESOURCE from every process's bounding set. kind runs its node
containers with ``--privileged``, which asks for every capability, and runc then fails with
``unable to apply caps: operation not permitted`` (docker 20.10 ignores ``--cap-drop`` under
``--privileged``). hack/localdocker.py registers this file as dockerd's default runtime only when
the bounding set lacks the capability (detected from /proc/self/status); it removes the one
capability from the OCI spec runc is about to use (the bundle's config.json for create/run, the
``--process`` file for exec) and then execs the real runc with the same arguments.
Standard library only; it runs once per container operation.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

RUNC = os.environ.get("MODELDEPLOY_REAL_RUNC", "/usr/sbin/runc")
CAP = "CAP_SYS_RESOURCE"
# runc's global flags that take a value (they come before the command).
VALUED_GLOBALS = {"--root", "--log", "--log-format", "--criu", "--rootless"}


def command(argv: list[str]) -> tuple[str, int]:
    """(runc command, its index in argv) or ("", -1)."""
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            skip = arg in VALUED_GLOBALS
            continue
        return arg, i
    return "", -1


def flag_value(args: list[str], *names: str) -> str | None:
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def drop_cap(process: dict) -> bool:
    caps = process.get("capabilities") or {}
    changed = False
    for kind, names in caps.items():
        if isinstance(names, list) and CAP in names:
            caps[kind] = [n for n in names if n != CAP]
            changed = True
    return changed


def rewrite(path: Path, process_only: bool) -> None:
    spec = json.loads(path.read_text())
    if drop_cap(spec if process_only else spec.get("process") or {}):
        tmp = path.with_name(path.name + ".modeldeploy")
        tmp.write_text(json.dumps(spec))
        os.replace(tmp, path)


def main(argv: list[str]) -> None:
    cmd, i = command(argv)
    rest = argv[i + 1:] if i >= 0 else []
    if cmd in ("create", "run"):
        bundle = flag_value(rest, "--bundle", "-b") or os.getcwd()
        rewrite(Path(bundle) / "config.json", process_only=False)
    elif cmd == "exec":
        process = flag_value(rest, "--process", "-p")
        if process:
            rewrite(Path(process), process_only=True)
    os.execv(RUNC, [RUNC, *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
