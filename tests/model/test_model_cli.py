"""The ``modeldeploy`` model subcommands as a newcomer runs them, and the generated manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from modeldeploy.cli import main
from modeldeploy_model import deploy
from modeldeploy_model import package as pkg
from modeldeploy_model.deploy import DeployError, ManifestOptions, build_manifest, docker_status

REPO = Path(__file__).resolve().parents[2]


def test_stage_by_stage_then_gate_failure(tmp_path, capsys):
    work = str(tmp_path / "w")
    assert main(["train", "--workdir", work, "--samples", "300", "--models", "linear,ridge"]) == 0
    assert main(["evaluate", "--workdir", work, "--gate", "r2>=0.99999"]) == 3
    err = capsys.readouterr().err
    assert "quality gate failed: r2 =" in err and ">= 0.99999" in err and "Traceback" not in err
    assert main(["export", "--workdir", work]) == 1
    assert "failed the quality gate" in capsys.readouterr().err
    assert not (tmp_path / "w" / "artifact").exists()
    assert main(["gate", "--workdir", work, "--gate", "r2>=0.5"]) == 0
    assert main(["export", "--workdir", work]) == 0
    assert main(["explain", "--workdir", work, "--rows", "10"]) == 0
    out = capsys.readouterr().out
    assert "shap.LinearExplainer" in out and "area" in out
    assert (tmp_path / "w" / "artifact" / "card.json").exists()
    assert main(["explain", "--artifact", str(tmp_path / "w" / "artifact"), "--row", "[50, 3, 1]"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["feature_names"] == ["area", "floor", "renovation"] and len(body["attributions"][0]) == 3
    assert main(["explain", "--artifact", str(tmp_path / "w" / "artifact"), "--row", "[50, 'x']"]) == 1
    assert "JSON list of numbers" in capsys.readouterr().err


def test_pipeline_on_diabetes_with_gate_file(tmp_path, capsys):
    gate = tmp_path / "gate.yaml"
    gate.write_text("r2: {min: 0.2}\nrmse: {max: 80}\n")
    work = tmp_path / "d"
    rc = main(["pipeline", "--workdir", str(work), "--dataset", "diabetes", "--models", "ridge",
               "--gate-config", str(gate), "--no-build"])
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "quality gate passed" in out and "model: room_price:" in out
    card = json.loads((work / "artifact" / "card.json").read_text())
    assert card["dataset"] == "diabetes" and len(card["features"]) == 10


@pytest.mark.parametrize(("argv", "message"), [
    (["export", "--workdir", "/nonexistent/w"], "run `modeldeploy evaluate"),
    (["train", "--workdir", "W", "--models", "svm"], "unknown model kind(s) svm"),
    (["evaluate", "--workdir", "W", "--gate", "accuracy>0.9"], "METRIC>=VALUE"),
    (["serve", "--artifact", "/nonexistent/a"], "not a modeldeploy artifact"),
    (["serve"], "exactly one of --artifact"),
    (["manifest", "--workdir", "/nonexistent/w", "--name", "x", "--image", "i:1"], "modeldeploy package"),
    (["manifest", "--name", "Bad_Name", "--image", "i:1", "--bento", "a:b"], "not a valid Kubernetes name"),
    (["manifest", "--name", "ok", "--image", "i:1", "--bento", "a:b", "--steps", "50,10"], "strictly increasing"),
    # The API's own image and name rules (what kubectl apply would refuse; the image once only had to be space-free).
    (["manifest", "--name", "ok", "--image", "registry.example/Room-Price:1", "--bento", "a:b"],
     "model.image must be a container image reference"),
    (["manifest", "--name", "ok", "--image", "registry.example/room-price:", "--bento", "a:b"],
     "model.image must be a container image reference"),
    (["manifest", "--name", "1-room", "--image", "i:1", "--bento", "a:b"], "starting with a letter"),
])
def test_user_errors_are_one_line_with_the_fix(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_manifest_exact_fields(tmp_path, capsys):
    out = tmp_path / "md.yaml"
    assert main(["manifest", "--name", "room-price", "--image", "registry.example/room-price:2f1c",
                 "--bento", "room_price:2f1c", "--prometheus", "http://prometheus.monitoring:9090",
                 "--output-file", str(out)]) == 0
    doc = yaml.safe_load(out.read_text())
    assert doc == {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "room-price", "namespace": "default"},
        "spec": {
            "model": {"image": "registry.example/room-price:2f1c", "bento": "room_price:2f1c", "port": 3000},
            "replicas": 2,
            "rollout": {
                "strategy": "Canary",
                "canary": {"steps": [10, 25, 50], "interval": "30s"},
                "analysis": {
                    "prometheus": {"address": "http://prometheus.monitoring:9090"},
                    "metrics": [{"name": "error-rate", "max": 0.01}, {"name": "latency-p99", "max": 0.5},
                                {"name": "prediction-drift", "max": 0.2}],
                },
            },
        },
    }
    assert main(["manifest", "--name", "room-price", "--image", "i:1", "--bento", "a:b"]) == 0
    plain = yaml.safe_load(capsys.readouterr().out)
    assert "analysis" not in plain["spec"]["rollout"]
    assert main(["manifest", "--name", "room-price", "--image", "i:1", "--bento", "a:b", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == plain


def test_gate_is_an_alias_of_evaluate_not_a_second_command(capsys):
    from modeldeploy.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["gate"]).func is parser.parse_args(["evaluate"]).func
    parser.print_help()
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("    ")]
    assert listed.count("evaluate") == 1 and "gate" not in listed


@pytest.mark.parametrize("port", ["99999", "0", "-1", "http"])
def test_serve_rejects_a_port_out_of_range_at_parse_time(port, capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--artifact", "/nonexistent", "--port", port])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --port" in err and "1..65535" in err


def test_serve_on_a_port_in_use_says_so_in_one_line(tiny_artifact, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--artifact", str(tiny_artifact), "--port", str(port)]) == 1
    assert capsys.readouterr().err == f"error: port {port} is in use: pick another with --port\n"


def _crd_schema() -> dict:
    path = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
    if not path.exists():
        pytest.skip("the ModelDeployment CRD is not in crds/ yet")
    crd = yaml.safe_load(path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return version["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("opts", [
    ManifestOptions(name="room-price", image="r/x:1", bento="x:1", prometheus="http://p:9090"),
    ManifestOptions(name="room-price", image="r/x:1", bento="x:1", strategy="Rolling", replicas=0),
])
def test_manifest_valid_against_the_crd_schema(opts):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(build_manifest(opts), _crd_schema())


def test_manifest_rejects_nonsense():
    with pytest.raises(DeployError, match="interval"):
        build_manifest(ManifestOptions(name="a", image="i", bento="a:b", interval="soon"))


@pytest.mark.parametrize("interval", ["1m30s", "500ms", "2d", "1h"])
def test_manifest_takes_every_interval_the_operator_takes(interval):
    """The generator's own regex rejected 1m30s (and 2d), which the operator accepts."""
    manifest = build_manifest(ManifestOptions(name="a", image="i", bento="a:b", interval=interval))
    assert manifest["spec"]["rollout"]["canary"]["interval"] == interval


@pytest.mark.parametrize(("opts", "message"), [
    (dict(interval="1.5m"), "--interval '1.5m': canary.interval must be a Prometheus duration such as 30s, 1m30s"),
    (dict(interval="30s1m"), "--interval '30s1m': canary.interval must be a Prometheus duration"),
    (dict(interval="0s"), "greater than zero (spec.rollout.canary.interval)"),
    (dict(port=70000), "--port 70000: Input should be less than or equal to 65535"),
    (dict(replicas=5000), "--replicas 5000: Input should be less than or equal to 1000"),
    (dict(prometheus="prometheus:9090"), "--prometheus 'prometheus:9090'"),
])
def test_manifest_is_validated_by_the_operators_api(opts, message):
    with pytest.raises(DeployError) as err:
        build_manifest(ManifestOptions(name="a", image="i", bento="a:b", **opts))
    assert message in str(err.value)


def test_manifest_cli_reports_the_api_message(capsys):
    assert main(["manifest", "--name", "ok", "--image", "i:1", "--bento", "a:b", "--interval", "1.5m"]) == 1
    err = capsys.readouterr().err
    assert "--interval '1.5m': canary.interval must be a Prometheus duration" in err and "Traceback" not in err
    assert main(["manifest", "--name", "ok", "--image", "i:1", "--bento", "a:b", "--interval", "1m30s"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["spec"]["rollout"]["canary"]["interval"] == "1m30s"


def test_containerize_says_what_is_missing(tmp_path, capsys, monkeypatch):
    if docker_status().ok:
        pytest.skip("a Docker engine is running here; containerize would really build")
    assert main(["containerize", "--bento", "room_price:abc", "--backend", "docker"]) == 1
    err = capsys.readouterr().err
    assert "cannot containerize room_price:abc" in err and ("dockerd" in err or "docker.io" in err)
    # auto: neither a Docker engine nor buildah -> one line naming both ways out
    monkeypatch.setattr(deploy.shutil, "which", lambda _name: None)
    assert main(["containerize", "--bento", "room_price:abc"]) == 1
    err = capsys.readouterr().err
    assert "cannot containerize room_price:abc" in err and "buildah" in err and "Traceback" not in err
    assert main(["containerize", "--bento", "room_price:abc", "--backend", "buildah"]) == 1
    assert "no `buildah` command" in capsys.readouterr().err


def test_buildah_options_for_a_local_base():
    local = deploy.buildah_options("localhost/modeldeploy/base:bookworm-py311-abc")
    assert "pull-never" in local and "network=host" in local and "layers" in local
    assert "--verbose" not in local and not any(o.startswith("pull=") for o in local)
    assert "pull-never" not in deploy.buildah_options("python:3.11-slim")


def test_base_image_and_no_apt_step(tmp_path, monkeypatch):
    card = {"name": "room_price"}
    assert "docker" not in pkg.build_options("room_price:abc", card, "room_price")
    opts = pkg.build_options("room_price:abc", card, "room_price", base_image="localhost/b:1")
    assert opts["docker"] == {"base_image": "localhost/b:1"}
    apt = ("apt-get update && apt-get install -q -y --no-install-recommends --allow-remove-essential "
           "ca-certificates gnupg2 bash build-essential git")
    (tmp_path / "bento.yaml").write_text(yaml.safe_dump(
        {"name": "room_price", "image": {"base_image": "localhost/b:1", "commands": [apt, "echo mine"]}}))
    assert pkg.drop_apt_step(tmp_path) is True
    assert yaml.safe_load((tmp_path / "bento.yaml").read_text())["image"]["commands"] == ["echo mine"]
    assert pkg.drop_apt_step(tmp_path) is False


def test_reference_bentofile_matches_generated_options():
    ref = yaml.safe_load((REPO / "bento" / "bentofile.yaml").read_text())
    gen = pkg.build_options("room_price:abc", {"name": "room_price"}, "room_price")
    assert ref["service"] == gen["service"] == pkg.SERVICE
    assert ref["include"] == gen["include"]
    assert ref["models"][0]["alias"] == gen["models"][0]["alias"]
    assert ref["python"]["lock_packages"] is False and gen["python"]["lock_packages"] is False


def test_demo_artifact_command(tmp_path, capsys):
    assert main(["demo-artifact", "--out", str(tmp_path / "a"), "--version-seed", "3"]) == 0
    assert "room_price:" in capsys.readouterr().out
    assert (tmp_path / "a" / "model.joblib").exists()


def test_killing_serve_stops_the_server(tiny_artifact):
    """`modeldeploy serve ... &` then `kill $!` (the README does this) stops the server, not only a wrapper."""
    family: list[int] = []
    import contextlib
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "modeldeploy.cli", "serve", "--artifact", str(tiny_artifact),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.3)
        family = _descendants(proc.pid)  # BentoML's workers run in sessions of their own
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while True:  # the listener goes away with the process (its workers included)
            with socket.socket() as c:
                if c.connect_ex(("127.0.0.1", port)) != 0:
                    break
            assert time.monotonic() < deadline, f"port {port} still answers after the serve process was killed"
            time.sleep(0.2)
    finally:  # whatever outlived the test (with the old wrapper: the server and its workers, orphaned)
        for pid in [proc.pid, *family, *_descendants(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid`, from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out
