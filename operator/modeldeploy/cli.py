"""The `modeldeploy` command line, also installed as the kubectl plugin `kubectl-modeldeploy`.

One entry point for both halves of the product: the operator side (run the operator, inspect and
steer rollouts) lives in `modeldeploy.cli_operator`; the model side (train, evaluate, export,
package, serve) registers its subcommands from `modeldeploy_model.cli` when the `ml` extra is
installed, so the operator image does not need the ML stack.

Why one `main` for every failure: a user sees one line and an exit code from `modeldeploy.exitcodes`
(1 error, 2 usage, 130 interrupted, ...), never a traceback. Shell completion comes from
argcomplete (`modeldeploy completion bash|zsh|fish` prints the script to source).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from modeldeploy import __version__, exitcodes
from modeldeploy.exitcodes import CLIError

Handler = Callable[[argparse.Namespace], int]
PROG = "modeldeploy"
PLUGIN_PROG = "kubectl modeldeploy"
# The executables a completion script is registered for (the console scripts in pyproject.toml).
EXECUTABLES = ("modeldeploy", "kubectl-modeldeploy")
SHELLS = ("bash", "zsh", "fish")


def _cmd_completion(args: argparse.Namespace) -> int:
    try:
        import argcomplete
    except ImportError:
        raise CLIError("shell completion needs the argcomplete package: pip install argcomplete") from None
    sys.stdout.write(argcomplete.shellcode(list(EXECUTABLES), shell=args.shell))
    return 0


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0] if __doc__ else None,
                                     epilog="exit codes: 0 ok (Healthy, Progressing, Paused, Pending), 1 error, "
                                            "2 usage, 3 gate failed, 4 RolledBack, 5 Degraded, 6 Failed, "
                                            "7 watch timed out, 130 interrupted")
    parser.add_argument("--version", action="version", version=f"modeldeploy {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("completion", help="print the shell completion script, e.g. "
                                          "source <(modeldeploy completion bash)")
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in: bash, zsh or fish")
    p.set_defaults(func=_cmd_completion)
    from modeldeploy.cli_operator import register as register_operator

    register_operator(sub)
    try:
        from modeldeploy_model.cli import register as register_model
    except ImportError:  # the `ml` extra is not installed (e.g. the operator image)
        pass
    else:
        register_model(sub)
    return parser


def _autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer a completion request (the shell sets _ARGCOMPLETE) and exit; otherwise do nothing."""
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    parser = build_parser(prog)
    _autocomplete(parser)
    args = parser.parse_args(argv)
    func: Handler | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return exitcodes.USAGE
    try:
        return func(args)
    except CLIError as e:
        exitcodes.error(str(e))
        return e.code
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return exitcodes.INTERRUPTED


def plugin() -> int:
    """Console script `kubectl-modeldeploy`: kubectl runs it for `kubectl modeldeploy ...`."""
    return main(prog=PLUGIN_PROG)


def plugin_complete() -> int:
    """Console script `kubectl_complete-modeldeploy`: kubectl (1.26+) runs it to complete `kubectl modeldeploy ...`.

    kubectl passes the words after the plugin's name, the last one being the word to complete, and
    reads cobra's answer: one candidate a line, then `:4` (ShellCompDirectiveNoFileComp)."""
    words = sys.argv[1:] or [""]
    try:
        import argcomplete
    except ImportError:
        print(":4")
        return 0
    finder = argcomplete.CompletionFinder(build_parser(PLUGIN_PROG))
    for candidate in finder._get_completions(["kubectl-modeldeploy", *words[:-1]], words[-1], "", None):
        print(candidate.strip())
    print(":4")
    return 0


if __name__ == "__main__":
    sys.exit(main())
