"""`modeldeploy release` without servers: the stage runner, each stage's failure line, the exit-code
mapping, patch vs create, and the command lines built for every load target.

The train and gate stages run for real on a tiny data set (no server involved); the API server is a
stand-in object only where the apply stage's own decisions are under test (the real one is in
tests/e2e/test_release.py).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from modeldeploy import exitcodes
from modeldeploy.cli import main
from modeldeploy.cli_operator import Conn
from modeldeploy.exitcodes import CLIError
from modeldeploy_model import release as rel
from modeldeploy_model.deploy import ManifestOptions
from modeldeploy_model.evaluate import parse_threshold
from modeldeploy_model.pipeline import PipelineConfig
from modeldeploy_model.release import (
    Context,
    LoadTarget,
    ReleaseError,
    ReleaseOptions,
    Reporter,
    Stage,
    failure_line,
    follow_line,
    image_reference,
    load_commands,
    outcome,
    parse_load,
    plan_apply,
    run_stages,
)


def options(tmp_path: Path, **kw: Any) -> ReleaseOptions:
    base: dict[str, Any] = {
        "pipeline": PipelineConfig(workdir=tmp_path / "work", n_samples=300, kinds=("ridge",)),
        "name": "price", "image": "localhost/modeldeploy/room-price",
        "manifest": ManifestOptions(name="", image="", bento="", steps=[20, 50], interval="10s"),
    }
    base.update(kw)
    return ReleaseOptions(**base)


def recorder(ran: list[str], name: str) -> Stage:
    """A stage that notes that it ran."""
    def run(c: Context) -> str:
        ran.append(name)
        return f"{name} done"

    return Stage(name, run, "fix it")


def reporter() -> tuple[Reporter, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Reporter(out, err), out, err


# --- the runner ------------------------------------------------------------------------------


def test_stages_run_in_order_numbered_and_timed(tmp_path: Path) -> None:
    ran: list[str] = []
    rep, out, err = reporter()
    stages = [recorder(ran, "a"), recorder(ran, "b"), recorder(ran, "c")]
    assert run_stages(stages, Context(options(tmp_path)), rep) == 0
    assert ran == ["a", "b", "c"]
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/3] a ..." and lines[1].startswith("[1/3] a: a done  ") and lines[1].endswith("s")
    assert [ln.split(":")[0] for ln in lines[1::2]] == ["[1/3] a", "[2/3] b", "[3/3] c"]
    assert err.getvalue() == ""


def test_the_first_failure_stops_the_release_with_one_line_and_its_code(tmp_path: Path) -> None:
    ran: list[str] = []

    def fail(c: Context) -> str:
        raise ReleaseError("quality gate failed: r2 = 0.5 on the test split, wanted >= 0.8.",
                           "improve the model", exitcodes.GATE_FAILED)

    stages = [recorder(ran, "train"), Stage("gate", fail, "x"), recorder(ran, "export")]
    rep, out, err = reporter()
    assert run_stages(stages, Context(options(tmp_path)), rep) == exitcodes.GATE_FAILED
    assert ran == ["train"]
    assert err.getvalue() == ("error: release failed at stage gate: quality gate failed: r2 = 0.5 on the test "
                              "split, wanted >= 0.8. fix: improve the model\n")
    assert "[3/3]" not in out.getvalue()


def test_checks_run_before_any_stage_and_name_their_stage(tmp_path: Path) -> None:
    ran: list[str] = []

    def no_socket(c: Context) -> None:
        raise ReleaseError("no containerd socket at /nope.sock", "pass --load containerd=SOCKET")

    stages = [recorder(ran, "train"), Stage("load", lambda c: "ok", "x", check=no_socket)]
    rep, out, err = reporter()
    assert run_stages(stages, Context(options(tmp_path)), rep) == exitcodes.ERROR
    assert ran == [] and out.getvalue() == ""
    assert err.getvalue().startswith("error: release failed at stage load: no containerd socket at /nope.sock. ")


@pytest.mark.parametrize(("exc", "code", "cause"), [
    (RuntimeError("disk full\nmore detail"), exitcodes.ERROR, "RuntimeError: disk full"),
    (ValueError("bad --models"), exitcodes.ERROR, "bad --models"),
    (CLIError("timed out after 5s", exitcodes.WATCH_TIMEOUT), exitcodes.WATCH_TIMEOUT, "timed out after 5s"),
])
def test_any_exception_becomes_the_line_with_the_stages_default_fix(
        tmp_path: Path, exc: Exception, code: int, cause: str) -> None:
    def boom(c: Context) -> str:
        raise exc

    rep, _, err = reporter()
    assert run_stages([Stage("package", boom, "check BentoML")], Context(options(tmp_path)), rep) == code
    assert err.getvalue() == f"error: release failed at stage package: {cause}. fix: check BentoML\n"


def test_the_outcome_line_comes_last(tmp_path: Path) -> None:
    def rolled_back(c: Context) -> str:
        c.outcome = "rolled back: error-rate 0.5 > 0.05"
        raise ReleaseError("ns/price rolled back room_price:b", "fix the model", exitcodes.ROLLED_BACK)

    rep, out, err = reporter()
    assert run_stages([Stage("follow", rolled_back, "x")], Context(options(tmp_path)), rep) == exitcodes.ROLLED_BACK
    assert out.getvalue().splitlines()[-1] == "rolled back: error-rate 0.5 > 0.05"
    assert "stage follow: ns/price rolled back room_price:b. fix: fix the model" in err.getvalue()


def test_on_a_terminal_the_end_line_replaces_the_start_line() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    rep = Reporter(out, io.StringIO())
    rep.start("[1/2]", "train")
    rep.done("[1/2]", "train", "ridge", 1.25)
    rep.start("[2/2]", "follow")
    rep.line("[2/2] follow: Progressing step 1/2 weight 20%")
    assert out.getvalue() == ("[1/2] train ...\r\033[K[1/2] train: ridge  1.2s\n"
                              "[2/2] follow ...\n[2/2] follow: Progressing step 1/2 weight 20%\n")


def test_failure_line_is_one_line_ending_in_the_fix() -> None:
    line = failure_line("image", ReleaseError("bentoml containerize exited with 1:\n  no base image.", "pass it"))
    assert line == "error: release failed at stage image: bentoml containerize exited with 1: no base image. " \
                   "fix: pass it"


def test_stage_list_and_no_follow(tmp_path: Path) -> None:
    rep, _, _ = reporter()
    names = [s.name for s in rel.stages(options(tmp_path), rep)]
    assert names == ["train", "gate", "export", "package", "image", "load", "apply", "follow"]
    assert [s.name for s in rel.stages(options(tmp_path, follow=False), rep)][-1] == "apply"


def test_format_seconds() -> None:
    assert [rel.format_seconds(s) for s in (3.21, 72, 3725)] == ["3.2s", "1m12s", "1h02m05s"]


# --- train and gate, for real ----------------------------------------------------------------


def test_gate_failure_names_metric_value_threshold_and_exits_3(tmp_path: Path) -> None:
    opts = options(tmp_path)
    opts.pipeline.thresholds = [parse_threshold("r2>=0.999")]
    ctx = Context(opts)
    assert "ridge on room_price" in rel._stage_train(ctx)
    with pytest.raises(ReleaseError) as e:
        rel._stage_gate(ctx)
    assert e.value.code == exitcodes.GATE_FAILED
    assert e.value.cause.startswith("quality gate failed: r2 = 0.") and "wanted >= 0.999" in e.value.cause
    assert "--gate" in e.value.fix and "nothing was exported" in e.value.fix
    assert not (tmp_path / "work" / "artifact").exists()


def test_gate_pass_summary_names_the_checks(tmp_path: Path) -> None:
    opts = options(tmp_path)
    opts.pipeline.thresholds = [parse_threshold("r2>=0.1"), parse_threshold("rmse<1e9")]
    ctx = Context(opts)
    rel._stage_train(ctx)
    summary = rel._stage_gate(ctx)
    assert summary.startswith("passed (r2 0.") and ">= 0.1, rmse " in summary and "< 1e+09)" in summary
    assert "ridge (best validation rmse)" in summary


# --- image and load: checks and command lines --------------------------------------------------


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", str(d))
    return d


def tool(d: Path, name: str) -> None:
    (d / name).write_text("#!/bin/sh\nexit 0\n")
    (d / name).chmod(0o755)


def test_no_builder_says_install_buildah_or_start_docker(tmp_path: Path, empty_path: Path) -> None:
    ctx = Context(options(tmp_path))
    with pytest.raises(ReleaseError) as e:
        rel._check_image(ctx)
    assert "apt-get install buildah" in e.value.fix and "Docker engine" in e.value.fix
    assert "no image builder" in e.value.cause


def test_a_bad_image_reference_is_refused_before_building(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError) as e:
        rel._check_image(Context(options(tmp_path, image="Not An Image")))
    assert "--image 'Not An Image'" in e.value.cause and "REPO:TAG" in e.value.fix


def test_no_ctr_names_the_tool_and_the_other_targets(tmp_path: Path, empty_path: Path) -> None:
    ctx = Context(options(tmp_path, load=parse_load("containerd=/run/x.sock")))
    with pytest.raises(ReleaseError) as e:
        rel._check_load(ctx)
    assert "no `ctr` on PATH" in e.value.cause and "apt-get install containerd" in e.value.fix
    assert "--load containerd=SOCKET" in e.value.fix


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "containerd.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    try:
        yield path
    finally:
        s.close()


def test_a_missing_socket_names_the_socket_option(tmp_path: Path, empty_path: Path, unix_socket: Path) -> None:
    tool(empty_path, "ctr")
    with pytest.raises(ReleaseError) as e:
        rel._check_load(Context(options(tmp_path, load=parse_load(f"containerd={tmp_path / 'nope.sock'}"))))
    assert e.value.cause == f"no containerd socket at {tmp_path / 'nope.sock'}"
    assert "--load containerd=SOCKET" in e.value.fix
    rel._check_load(Context(options(tmp_path, load=parse_load(f"containerd={unix_socket}"))))  # a socket: fine


def test_kind_needs_kind(tmp_path: Path, empty_path: Path) -> None:
    with pytest.raises(ReleaseError) as e:
        rel._check_load(Context(options(tmp_path, load=parse_load("kind"))))
    assert "no `kind` on PATH" in e.value.cause
    tool(empty_path, "kind")
    rel._check_load(Context(options(tmp_path, load=parse_load("kind"))))
    rel._check_load(Context(options(tmp_path, load=parse_load("none"))))


@pytest.mark.parametrize(("text", "target"), [
    ("containerd", LoadTarget("containerd", "/run/containerd/containerd.sock")),
    ("containerd=/srv/node/containerd.sock", LoadTarget("containerd", "/srv/node/containerd.sock")),
    ("kind", LoadTarget("kind", "kind")), ("kind=dev", LoadTarget("kind", "dev")),
    ("push", LoadTarget("push")), ("none", LoadTarget("none")),
])
def test_parse_load(text: str, target: LoadTarget) -> None:
    assert parse_load(text) == target


@pytest.mark.parametrize("text", ["docker", "push=x", "none=y", "kind=", "containerd="])
def test_parse_load_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_load(text)


@pytest.mark.parametrize(("image", "ref"), [
    ("localhost/modeldeploy/room-price", "localhost/modeldeploy/room-price:0a1b2c"),
    ("registry.example:5000/ml/room-price", "registry.example:5000/ml/room-price:0a1b2c"),
    ("registry.example:5000/ml/room-price:v7", "registry.example:5000/ml/room-price:v7"),
    ("room-price:prod", "room-price:prod"),
])
def test_image_reference_tags_with_the_model_version_unless_tagged(image: str, ref: str) -> None:
    assert image_reference(image, "0a1b2c") == ref


def test_a_digest_cannot_be_built() -> None:
    with pytest.raises(ReleaseError):
        image_reference("repo@sha256:" + "0" * 64, "x")


ARCHIVE = Path("/w/image.tar")
IMAGE = "localhost/modeldeploy/room-price:0a1b2c"


def test_load_into_containerd_with_buildah_exports_by_id_then_imports_into_k8s_io() -> None:
    cmds = load_commands(parse_load("containerd=/n/containerd.sock"), "buildah", IMAGE, ARCHIVE, source="f00d")
    assert cmds == [
        ["buildah", "push", "--quiet", "f00d", f"docker-archive:{ARCHIVE}:{IMAGE}"],
        ["ctr", "--address", "/n/containerd.sock", "-n", "k8s.io", "images", "import", "--all-platforms",
         str(ARCHIVE)],
    ]


def test_load_into_kind_with_docker() -> None:
    assert load_commands(parse_load("kind=dev"), "docker", IMAGE, ARCHIVE) == [
        ["docker", "save", "-o", str(ARCHIVE), IMAGE],
        ["kind", "load", "image-archive", str(ARCHIVE), "--name", "dev"],
    ]


def test_push_and_none() -> None:
    assert load_commands(parse_load("push"), "buildah", IMAGE, ARCHIVE) == [
        ["buildah", "push", IMAGE, f"docker://{IMAGE}"]]
    assert load_commands(parse_load("push"), "docker", IMAGE, ARCHIVE) == [["docker", "push", IMAGE]]
    assert load_commands(parse_load("none"), "docker", IMAGE, ARCHIVE) == []


def test_a_failing_command_reports_its_exit_code_and_the_logs_tail(tmp_path: Path) -> None:
    log = tmp_path / "load.log"
    with pytest.raises(ReleaseError) as e:
        rel._run_logged(["sh", "-c", "echo importing; echo 'ctr: permission denied' >&2; exit 3"], log,
                        "ctr images", "run as root")
    assert e.value.cause.startswith("ctr images exited with 3") and "ctr: permission denied" in e.value.cause
    assert str(log) in e.value.cause
    with pytest.raises(ReleaseError) as e:
        rel._run_logged(["no-such-tool-here"], log, "ctr images", "install it")
    assert "no `no-such-tool-here` on PATH" in e.value.cause and e.value.fix == "install it"


# --- apply: create or patch ------------------------------------------------------------------

EXISTING: dict[str, Any] = {
    "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
    "metadata": {"name": "price", "namespace": "ml", "generation": 3},
    "spec": {"model": {"image": "localhost/modeldeploy/room-price:v1", "bento": "room_price:v1", "env": []},
             "replicas": 4, "rollout": {"strategy": "Canary", "canary": {"steps": [5, 10], "interval": "2m"}}},
}


def test_a_new_object_is_created_with_the_rollout_options() -> None:
    opts = ManifestOptions(name="price", image="", bento="", namespace="ml", steps=[20, 50], interval="10s",
                           prometheus="http://prom:9090", max_error_rate=0.02)
    plan = plan_apply(None, opts, IMAGE, "room_price:0a1b2c")
    assert plan.action == "create"
    assert plan.body["metadata"] == {"name": "price", "namespace": "ml"}
    assert plan.body["spec"]["model"] == {"image": IMAGE, "bento": "room_price:0a1b2c", "port": 3000}
    rollout = plan.body["spec"]["rollout"]
    assert rollout["canary"] == {"steps": [20, 50], "interval": "10s"}
    assert rollout["analysis"]["metrics"][0] == {"name": "error-rate", "max": 0.02}


def test_an_existing_object_gets_only_its_model_changed() -> None:
    opts = ManifestOptions(name="price", image="", bento="", steps=[20, 50])
    plan = plan_apply(EXISTING, opts, IMAGE, "room_price:0a1b2c")
    assert plan.action == "patch" and not plan.unchanged
    assert plan.body == {"spec": {"model": {"image": IMAGE, "bento": "room_price:0a1b2c"}}}
    same = plan_apply(EXISTING, opts, "localhost/modeldeploy/room-price:v1", "room_price:v1")
    assert same.unchanged


class FakeCustomObjects:
    """Stands in for CustomObjectsApi in the apply stage: records calls, answers like an API server would."""

    def __init__(self, existing: dict[str, Any] | None, refuse: str | None = None) -> None:
        self.existing, self.refuse = existing, refuse
        self.calls: list[tuple[str, Any]] = []

    def get_namespaced_custom_object(self, g: str, v: str, ns: str, p: str, name: str, **_: Any) -> dict[str, Any]:
        if self.existing is None:
            e = ApiException(status=404, reason="Not Found")
            e.body = json.dumps({"kind": "Status", "message": f'modeldeployments.modeldeploy.io "{name}" not found'})
            raise e
        return self.existing

    def _refuse(self) -> None:
        if self.refuse:
            e = ApiException(status=422, reason="Unprocessable Entity")
            e.body = json.dumps({"kind": "Status", "message": self.refuse})
            raise e

    def create_namespaced_custom_object(self, g: str, v: str, ns: str, p: str, body: dict[str, Any],
                                        **_: Any) -> dict[str, Any]:
        self.calls.append(("create", body))
        self._refuse()
        return {**body, "metadata": {**body["metadata"], "generation": 1, "resourceVersion": "1"}}

    def patch_namespaced_custom_object(self, g: str, v: str, ns: str, p: str, name: str, body: dict[str, Any],
                                       **_: Any) -> dict[str, Any]:
        self.calls.append(("patch", body))
        self._refuse()
        assert self.existing is not None
        return {**self.existing, "metadata": {**self.existing["metadata"], "generation": 4}}


def apply_ctx(tmp_path: Path, api: FakeCustomObjects) -> Context:
    ctx = Context(options(tmp_path))
    ctx.conn = Conn(api, "ml", "https://127.0.0.1:6443")
    ctx.existing, ctx.image, ctx.bento = api.existing, IMAGE, "room_price:0a1b2c"
    return ctx


def test_apply_patches_the_existing_object(tmp_path: Path) -> None:
    api = FakeCustomObjects(EXISTING)
    summary = rel._stage_apply(apply_ctx(tmp_path, api))
    assert api.calls == [("patch", {"spec": {"model": {"image": IMAGE, "bento": "room_price:0a1b2c"}}})]
    assert summary.startswith("patched spec.model of ml/price to room_price:0a1b2c (generation 4")


def test_apply_creates_a_missing_object(tmp_path: Path) -> None:
    api = FakeCustomObjects(None)
    assert rel._stage_apply(apply_ctx(tmp_path, api)) == "created ml/price (generation 1)"
    (action, body), = api.calls
    assert action == "create" and body["spec"]["rollout"]["canary"] == {"steps": [20, 50], "interval": "10s"}


def test_a_refused_apply_carries_the_api_servers_message(tmp_path: Path) -> None:
    msg = ('ModelDeployment.modeldeploy.io "price" is invalid: spec.model.image: Invalid value: "x": must name an '
           "image")
    api = FakeCustomObjects(EXISTING, refuse=msg)
    with pytest.raises(ReleaseError) as e:
        rel._stage_apply(apply_ctx(tmp_path, api))
    assert e.value.cause.startswith("the API server refused to patch ml/price: the API server answered 422")
    assert msg in e.value.cause and "kubectl edit mdep price" in e.value.fix


def test_bad_rollout_options_for_a_new_object_fail_the_apply_check(tmp_path: Path) -> None:
    # The same check `_check_apply` makes once it knows the object does not exist (before any build).
    from dataclasses import replace

    from modeldeploy_model.deploy import DeployError, validate

    bad = replace(options(tmp_path).manifest, name="price", image=image_reference(IMAGE, "0"), bento="room_price:0",
                  steps=[50, 20])
    with pytest.raises(DeployError, match="--steps"):
        validate(bad)


# --- follow: the outcome and its lines -------------------------------------------------------


def status_obj(phase: str, stable: str = "0a1b2c", message: str = "", **st: Any) -> dict[str, Any]:
    return {"metadata": {"name": "price", "namespace": "ml", "generation": 4},
            "spec": {"rollout": {"canary": {"steps": [20, 50]}}},
            "status": {"phase": phase, "message": message, "observedGeneration": 4,
                       "stable": {"image": f"localhost/modeldeploy/room-price:{stable}",
                                  "bento": f"room_price:{stable}", "hash": "h"}, **st}}


@pytest.mark.parametrize(("phase", "stable", "code"), [
    ("Healthy", "0a1b2c", exitcodes.OK),
    ("Healthy", "v1", exitcodes.ERROR),          # someone applied another revision meanwhile
    ("RolledBack", "v1", exitcodes.ROLLED_BACK),
    ("Degraded", "v1", exitcodes.DEGRADED),
    ("Failed", "v1", exitcodes.FAILED),
])
def test_outcome_exit_codes(phase: str, stable: str, code: int) -> None:
    rc, cause, fix = outcome(status_obj(phase, stable, "error-rate 0.5 > 0.05."), IMAGE, "room_price:0a1b2c")
    assert rc == code
    if code == exitcodes.OK:
        assert cause == fix == ""
    else:
        assert "ml/price" in cause and "modeldeploy status price -n ml -o wide" in fix


def test_a_rollback_says_why_and_what_keeps_serving() -> None:
    rc, cause, fix = outcome(status_obj("RolledBack", "v1", "canary failed: error-rate 0.5 > 0.05"), IMAGE,
                             "room_price:0a1b2c")
    assert rc == 4 and cause == "ml/price rolled back room_price:0a1b2c: canary failed: error-rate 0.5 > 0.05"
    assert fix.startswith("room_price:v1 keeps serving")


def test_follow_line() -> None:
    obj = status_obj("Progressing", "v1", "step 2 of 2", currentStep=2, canaryWeight=50,
                     timeline=[{"step": 1, "verdict": "Pass"}])
    assert follow_line(obj, "[8/8]") == "[8/8] follow: Progressing step 2/2 weight 50% last Pass  step 2 of 2"
    assert follow_line(status_obj("Healthy", message=""), "[8/8]") == "[8/8] follow: Healthy"
    stale = status_obj("Healthy", "v1", observedGeneration=3)  # the patch made generation 4
    assert follow_line(stale, "[8/8]") == "[8/8] follow: waiting for the operator to act on generation 4 " \
                                          "(still Healthy)"


def test_command_labels() -> None:
    cmds = load_commands(parse_load("containerd=/s"), "buildah", IMAGE, ARCHIVE, source="f00d")
    assert [rel.command_label(c) for c in cmds] == ["buildah push", "ctr images import"]
    assert rel.command_label(["kind", "load", "image-archive", "x"]) == "kind load"


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["release", "--image", "x/y", "--load", "none"],                      # no --name
    ["release", "--name", "p", "--load", "none"],                         # no --image
    ["release", "--name", "p", "--image", "x/y"],                         # no --load
    ["release", "--name", "p", "--image", "x/y", "--load", "docker"],
    ["release", "--name", "p", "--image", "x/y", "--load", "none", "--timeout", "0"],
])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == exitcodes.USAGE
    assert "Traceback" not in capsys.readouterr().err


def test_a_bad_gate_option_fails_at_stage_gate_before_anything_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["release", "--name", "p", "--image", "x/y", "--load", "none", "--workdir", str(tmp_path / "w"),
               "--gate", "accuracy>0.9"])
    assert rc == exitcodes.ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: release failed at stage gate: gate threshold 'accuracy>0.9': unknown metric")
    assert not (tmp_path / "w").exists()


def test_no_cluster_fails_at_stage_apply_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    rc = main(["release", "--name", "p", "--image", "localhost/x/y", "--load", "none", "--backend", "buildah",
               "--workdir", str(tmp_path / "w")])
    captured = capsys.readouterr()
    if "stage image" in captured.err:  # no buildah on this machine: the image check comes first
        assert "apt-get install buildah" in captured.err
        return
    assert rc == exitcodes.ERROR and captured.out == ""
    assert captured.err.startswith("error: release failed at stage apply: no cluster to talk to")
    assert not (tmp_path / "w" / "split.npz").exists()


def test_release_is_in_the_exit_code_table() -> None:
    assert "modeldeploy release" in (exitcodes.__doc__ or "")
    assert os.path.basename(rel.__file__) == "release.py"


class FinalObject:
    """CustomObjectsApi answering reads with one object whose status already describes its generation
    (so following ends without opening a watch)."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj

    def get_namespaced_custom_object(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return self.obj


def follow_ctx(tmp_path: Path, obj: dict[str, Any]) -> Context:
    ctx = Context(options(tmp_path))
    obj["metadata"]["resourceVersion"] = "7"
    ctx.conn, ctx.applied = Conn(FinalObject(obj), "ml", "https://127.0.0.1:6443"), obj
    ctx.image, ctx.bento = IMAGE, "room_price:0a1b2c"
    return ctx


def test_follow_promoted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    rep = Reporter(out, io.StringIO())
    rep.start("[8/8]", "follow")
    ctx = follow_ctx(tmp_path, status_obj("Healthy"))
    assert rel._stage_follow(ctx, rep, "[8/8]") == "Healthy, stable room_price:0a1b2c"
    assert ctx.outcome.startswith("released: promoted room_price:0a1b2c in ")
    assert capsys.readouterr().out == "[8/8] follow: Healthy\n"
    assert out.getvalue() == "[8/8] follow ...\n"  # the start line was ended before watch printed


def test_follow_rolled_back_exits_4_with_the_status_message(tmp_path: Path) -> None:
    rep, _, _ = reporter()
    ctx = follow_ctx(tmp_path, status_obj("RolledBack", "v1", "error-rate 0.5 > 0.05"))
    with pytest.raises(ReleaseError) as e:
        rel._stage_follow(ctx, rep, "[8/8]")
    assert e.value.code == exitcodes.ROLLED_BACK and ctx.outcome == "rolled back: error-rate 0.5 > 0.05"
    assert "room_price:v1 keeps serving" in e.value.fix


class NotFound:
    def __init__(self, message: str) -> None:
        self.message = message

    def get_namespaced_custom_object(self, *args: Any, **kw: Any) -> dict[str, Any]:
        e = ApiException(status=404, reason="Not Found")
        e.body = json.dumps({"kind": "Status", "message": self.message})
        raise e


def test_a_missing_object_is_created_but_a_missing_crd_is_an_error() -> None:
    conn = Conn(NotFound('modeldeployments.modeldeploy.io "price" not found'), "ml", "https://127.0.0.1:6443")
    assert rel.read_existing(conn, "price") is None
    conn = Conn(NotFound("the server could not find the requested resource"), "ml", "https://127.0.0.1:6443")
    with pytest.raises(CLIError, match="not installed in the cluster"):
        rel.read_existing(conn, "price")
