"""The `modeldeploy` command line.

One entry point for both halves of the product: the operator side (run the operator, inspect and
steer rollouts) lives here; the model side (train, evaluate, export, package, serve) registers
its subcommands from `modeldeploy_model.cli` when the `ml` extra is installed, so the operator
image does not need the ML stack.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from modeldeploy import __version__

Handler = Callable[[argparse.Namespace], int]


def _cmd_version(_: argparse.Namespace) -> int:
    print(f"modeldeploy {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modeldeploy", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=_cmd_version)
    from modeldeploy.cli_operator import register as register_operator

    register_operator(sub)
    try:
        from modeldeploy_model.cli import register as register_model
    except ImportError:  # the `ml` extra is not installed (e.g. the operator image)
        pass
    else:
        register_model(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
