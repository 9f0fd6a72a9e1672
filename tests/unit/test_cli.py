"""The CLI's kubectl manners without a server: flags, usage errors, exit codes, one-line errors."""

from __future__ import annotations

import argparse
import importlib
import json
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.rest import ApiException

from modeldeploy import __version__, cli_operator, exitcodes
from modeldeploy.cli import EXECUTABLES, build_parser, main
from modeldeploy.cli_operator import Conn, api_error, namespace_of
from modeldeploy_model.testing import free_port

REPO = Path(__file__).resolve().parents[2]


def kubeconfig(path: Path, server: str, contexts: dict[str, str], current: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": n, "context": {"cluster": "c", "user": "u", "namespace": ns}}
                     for n, ns in contexts.items()],
    }))
    return path


def test_version_flag_and_no_version_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"modeldeploy {__version__}"
    with pytest.raises(SystemExit) as e:
        main(["version"])
    assert e.value.code == exitcodes.USAGE


@pytest.mark.parametrize("argv", [
    ["status"], ["status", "x", "-o", "xml"], ["status", "x", "--watch", "--timeout", "0"],
    ["status", "x", "--watch", "--timeout", "soon"], ["promote", "x", "-o", "wide"], ["completion", "tcsh"],
])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == exitcodes.USAGE
    assert "Traceback" not in capsys.readouterr().err


def test_timeout_without_watch_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "x", "--timeout", "5m"]) == exitcodes.USAGE
    assert capsys.readouterr().err == "error: --timeout applies to --watch: add --watch\n"


def test_every_flag_of_every_command_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in sub.choices.items() for a in p._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert missing == []
    assert all(a.help for a in sub._choices_actions)  # every command too


def test_completion_scripts_name_both_executables(capsys: pytest.CaptureFixture[str]) -> None:
    for shell, marker in (("bash", "complete "), ("zsh", "#compdef"), ("fish", "complete --command")):
        assert main(["completion", shell]) == 0
        script = capsys.readouterr().out
        assert marker in script and all(x in script for x in EXECUTABLES), shell


def test_the_kubectl_plugin_is_a_console_script_running_the_same_commands() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    module, func = project["scripts"]["kubectl-modeldeploy"].split(":")
    assert callable(getattr(importlib.import_module(module), func))
    assert any(d.startswith("argcomplete") for d in project["dependencies"])
    plugin = build_parser("kubectl modeldeploy")
    assert plugin.format_usage().startswith("usage: kubectl modeldeploy")
    assert plugin.parse_args(["status", "x", "-n", "ml"]).func is build_parser().parse_args(["status", "x"]).func


def test_api_server_down_is_one_line_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    kc = kubeconfig(tmp_path / "kc", f"https://127.0.0.1:{port}", {"a": "ml"}, "a")
    for argv in (["status", "x"], ["pause", "x"], ["status", "x", "--watch"]):
        started = time.monotonic()
        assert main([*argv, "--kubeconfig", str(kc)]) == exitcodes.ERROR
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert f"cannot reach the API server at https://127.0.0.1:{port}: connection refused" in err
        assert time.monotonic() - started < 5  # no urllib3 retries with back-off


def test_no_kubeconfig_says_how_to_get_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "x", "--kubeconfig", "/nonexistent/kubeconfig"]) == exitcodes.ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: no cluster to talk to") and err.count("\n") == 1


def test_namespace_follows_kubectl_flag_then_context_then_default(tmp_path: Path) -> None:
    kc = str(kubeconfig(tmp_path / "kc", "https://127.0.0.1:1", {"a": "ns-a", "b": "ns-b"}, "a"))

    def ns(**kw: Any) -> str:
        return namespace_of(argparse.Namespace(**{"namespace": "", "kubeconfig": kc, "context": None, **kw}))

    assert ns() == "ns-a" and ns(context="b") == "ns-b" and ns(context="b", namespace="x") == "x"
    assert ns(kubeconfig="/nonexistent") == "default"


def _api_exception(status: int, reason: str, message: str) -> ApiException:
    e = ApiException(status=status, reason=reason)
    e.body = json.dumps({"kind": "Status", "message": message})
    return e


@pytest.mark.parametrize(("status", "reason", "message", "expected"), [
    (404, "Not Found", 'modeldeployments.modeldeploy.io "x" not found',
     'modeldeployment "x" not found in namespace "ml" (list them with: kubectl get mdep -A)'),
    (404, "Not Found", "the server could not find the requested resource",
     "the ModelDeployment API (modeldeploy.io/v1alpha1) is not installed"),
    (403, "Forbidden", 'modeldeployments.modeldeploy.io "x" is forbidden: User "bob" cannot get resource',
     'forbidden: modeldeployments.modeldeploy.io "x" is forbidden: User "bob" cannot get resource'),
    (401, "Unauthorized", "Unauthorized", "rejected the credentials (401 Unauthorized)"),
    (500, "Internal Server Error", "etcdserver: request timed out",
     "the API server answered 500 Internal Server Error: etcdserver: request timed out"),
])
def test_api_errors_are_one_line(status: int, reason: str, message: str, expected: str) -> None:
    text = str(api_error(_api_exception(status, reason, message), Conn(None, "ml", "https://k:6443"), "x"))
    assert expected in text and "\n" not in text


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(_: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_operator, "_cmd_status", interrupted)
    assert main(["status", "x"]) == exitcodes.INTERRUPTED


def test_an_unknown_context_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kc = kubeconfig(tmp_path / "kc", "https://127.0.0.1:1", {"a": "ml"}, "a")
    assert main(["status", "x", "--kubeconfig", str(kc), "--context", "nope"]) == exitcodes.ERROR
    assert capsys.readouterr().err == ('error: context "nope" not found in the kubeconfig (list them with: kubectl '
                                       "config get-contexts)\n")


@pytest.mark.parametrize(("words", "expected"), [
    (["st"], ["status"]), (["status", "x", "-o", ""], ["json", "yaml", "wide"]),
    (["status", "x", "--w"], ["--watch"]),
])
def test_kubectl_completes_the_plugin_in_cobra_s_format(words: list[str], expected: list[str],
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from modeldeploy.cli import plugin_complete

    monkeypatch.setattr("sys.argv", ["kubectl_complete-modeldeploy", *words])
    assert plugin_complete() == 0
    assert capsys.readouterr().out.splitlines() == [*expected, ":4"]
