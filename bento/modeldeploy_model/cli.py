"""``modeldeploy`` subcommands for the model side: train -> evaluate/gate -> export -> explain ->
package -> serve -> containerize -> manifest, plus ``pipeline`` for all of it at once and
``release`` for training to production (:mod:`modeldeploy_model.release`).

Why registered from here: the operator's CLI (``modeldeploy.cli``) imports this module only if the
``ml`` extra is installed, so this module imports nothing heavy at load time; each handler imports
what it needs. User errors (missing stage output, a failed gate, bad flags) print one line saying
what is wrong and what to run, and return a non-zero code - never a traceback.

Exit codes (``modeldeploy.exitcodes``): 0 ok, 1 user error, 2 usage, 3 quality gate failed (the
model was not exported or packaged), 130 interrupted; ``release`` also 4 rolled back, 5 degraded,
6 failed, 7 follow timed out.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modeldeploy import exitcodes

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")  # BentoML usage analytics would need the network
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXIT_USER_ERROR = exitcodes.ERROR
EXIT_GATE_FAILED = exitcodes.GATE_FAILED
DEFAULT_WORKDIR = "modeldeploy-work"

Handler = Callable[[argparse.Namespace], int]


_err = exitcodes.error


def _guard(func: Handler) -> Handler:
    """Turn the exceptions that mean "the user must do something" into one line and an exit code."""

    def wrapper(args: argparse.Namespace) -> int:
        from modeldeploy_model.deploy import DeployError
        from modeldeploy_model.evaluate import GateFailed
        from modeldeploy_model.package import PackageError
        from modeldeploy_model.pipeline import StageError
        from modeldeploy_model.runtime import ArtifactError

        try:
            return func(args)
        except GateFailed as exc:
            _err(f"{exc}. The model was not exported or packaged; improve it or relax the threshold.")
            return EXIT_GATE_FAILED
        except (StageError, ArtifactError, PackageError, DeployError, ValueError, FileNotFoundError) as exc:
            _err(str(exc))
            return EXIT_USER_ERROR

    wrapper.__name__ = func.__name__
    return wrapper


# --- shared options --------------------------------------------------------------------------


def _add_workdir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", type=Path, default=Path(DEFAULT_WORKDIR),
                   help=f"pipeline work directory (default: ./{DEFAULT_WORKDIR})")


def _add_data_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=["room_price", "diabetes"], default="room_price",
                   help="room_price: synthetic (size --samples); diabetes: ships with scikit-learn")
    p.add_argument("--samples", type=int, default=2000, help="rows of the synthetic data set (default 2000)")
    p.add_argument("--seed", type=int, default=42, help="seed for data, split and training (default 42)")
    p.add_argument("--models", default="ridge,forest",
                   help="comma-separated kinds: linear, ridge, forest, gbt, mlp, keras (default ridge,forest)")
    p.add_argument("--epochs", type=int, default=60, help="Keras epochs (default 60)")


def _add_gate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gate", action="append", default=[], metavar="METRIC>=VALUE",
                   help="quality threshold on the test split, METRIC one of mse, rmse, mae, r2 and OP one of "
                        ">=, >, <=, < (strict as written), e.g. --gate 'r2>0.9' --gate 'rmse<=15' (repeatable)")
    p.add_argument("--gate-config", type=Path, help="YAML/JSON file: {r2: {min: 0.9}, rmse: {max: 15}}")
    p.add_argument("--select-by", choices=["rmse", "mse", "mae", "r2"], default="rmse",
                   help="validation metric used to pick the model (default rmse)")


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-quantize", action="store_true", help="skip the int8 dynamic quantization candidate")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max |prediction difference| allowed for an export (default: 2%% of the target's std)")


def _add_package(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="room_price", help="BentoML model and Bento name (default room_price)")
    p.add_argument("--no-build", action="store_true", help="save to the model store only, skip `bentoml build`")
    p.add_argument("--base-image", default=None,
                   help="the Bento image's base (default: $MODELDEPLOY_BASE_IMAGE, else BentoML's python:3.11-slim)")


def _add_progress_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no stage lines or progress bars on stderr (the summary on stdout stays)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report (WORKDIR/report/index.html)")


def _register_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="(re)build the HTML report with figures from a pipeline's work directory")
    _add_workdir(p)
    p.set_defaults(func=cmd_report)


def _thresholds(args: argparse.Namespace) -> list[Any]:
    from modeldeploy_model.evaluate import load_gate_file, parse_threshold

    out = [parse_threshold(t) for t in args.gate]
    if args.gate_config is not None:
        out += load_gate_file(args.gate_config)
    return out


def _train_options(args: argparse.Namespace) -> Any:
    from modeldeploy_model.train import TrainOptions

    if args.epochs < 1:
        raise ValueError("--epochs must be >= 1")
    return TrainOptions(seed=args.seed, epochs=args.epochs)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=float))


# --- handlers --------------------------------------------------------------------------------


@_guard
def cmd_train(args: argparse.Namespace) -> int:
    from modeldeploy_model.pipeline import stage_data, stage_train
    from modeldeploy_model.train import parse_kinds

    kinds = parse_kinds(args.models)
    d = stage_data(args.workdir, args.dataset, args.samples, args.seed)
    print(f"data: {d.dataset}, {d.n_train}/{d.n_val}/{d.n_test} rows train/val/test, {d.data_hash[:23]}...")
    t = stage_train(args.workdir, kinds, _train_options(args))
    for m in t.models:
        print(f"trained {m['kind']} ({m['family']}) in {m['train_seconds']:.2f}s -> {m['path']}")
    return 0


def _print_scores(scores: dict[str, Any], selected: str) -> None:
    print(f"{'model':8} {'split':5} {'rmse':>10} {'mae':>10} {'r2':>8}")
    for kind, by_split in sorted(scores.items()):
        for split in ("val", "test"):
            m = by_split[split]
            mark = " <- selected" if kind == selected and split == "val" else ""
            print(f"{kind:8} {split:5} {m['rmse']:10.4g} {m['mae']:10.4g} {m['r2']:8.4f}{mark}")


@_guard
def cmd_evaluate(args: argparse.Namespace) -> int:
    from modeldeploy_model.evaluate import GateFailed
    from modeldeploy_model.pipeline import read_record, stage_evaluate

    try:
        res = stage_evaluate(args.workdir, _thresholds(args), args.select_by)
    except GateFailed:
        rec = read_record(args.workdir, "evaluate", "modeldeploy evaluate")
        _print_scores(rec["scores"], rec["selected"])
        raise
    _print_scores(res.scores, res.selected)
    print(res.gate.summary())
    return 0


@_guard
def cmd_export(args: argparse.Namespace) -> int:
    from modeldeploy_model.pipeline import stage_export

    res = stage_export(args.workdir, quantize=not args.no_quantize, tolerance_abs=args.tolerance)
    _print_export(res)
    print(f"artifact: {args.workdir / 'artifact'}")
    return 0


def _print_export(res: Any) -> None:
    for p in res.parity:
        verdict = "passed" if p.passed else f"FAILED ({p.reason})"
        print(f"parity {p.runtime}: max|diff| {p.max_abs_diff:.3g} (tol {p.tolerance_abs:.3g}), "
              f"RMSE change {p.rmse_relative_delta:.2%}: {verdict}")
    for lat in res.latency:
        print(f"latency {lat.runtime}: 1 row p50 {lat.row_p50_ms:.3f} ms, 256 rows p50 {lat.batch256_p50_ms:.3f} ms")
    for rt, e in res.errors.items():
        print(f"not exported: {rt}: {e.splitlines()[0]}")
    print(f"serving runtime: {res.chosen_runtime} (fastest that passed parity)")


@_guard
def cmd_explain(args: argparse.Namespace) -> int:
    if args.artifact is not None and args.row:
        import numpy as np

        from modeldeploy_model.explain import from_artifact

        try:
            rows = np.asarray([json.loads(r) for r in args.row], dtype=float)
        except (json.JSONDecodeError, ValueError):
            raise ValueError("--row takes a JSON list of numbers, e.g. --row '[64.5, 4, 1]'") from None
        _print_json(from_artifact(args.artifact).explain(rows).to_dict())
        return 0
    from modeldeploy_model.pipeline import stage_explain

    res = stage_explain(args.workdir, rows=args.rows)
    print(f"{res.explainer} on {res.rows} test rows (additivity error {res.max_additivity_error:.2g})")
    for name, v in res.importance.items():
        print(f"  {name:20} mean |SHAP| {v:.4g}")
    return 0


@_guard
def cmd_package(args: argparse.Namespace) -> int:
    from modeldeploy_model.package import package
    from modeldeploy_model.pipeline import record

    artifact = args.artifact or args.workdir / "artifact"
    res = package(artifact, name=args.name, build=not args.no_build, base_image=args.base_image)
    if args.artifact is None:
        record(args.workdir, "package", res.to_dict())
    print(f"model: {res.model_tag}")
    if res.bento_tag:
        print(f"bento: {res.bento_tag}  (serve: modeldeploy serve --bento {res.bento_tag})")
    return 0


@_guard
def cmd_pipeline(args: argparse.Namespace) -> int:
    from modeldeploy_model.pipeline import PipelineConfig, run_pipeline
    from modeldeploy_model.progress import Progress
    from modeldeploy_model.train import parse_kinds

    cfg = PipelineConfig(
        workdir=args.workdir, dataset=args.dataset, n_samples=args.samples, seed=args.seed,
        kinds=parse_kinds(args.models), train=_train_options(args), thresholds=_thresholds(args),
        selection_metric=args.select_by, quantize=not args.no_quantize, tolerance_abs=args.tolerance,
        explain=True, report=not args.no_report, package=not args.no_package, build=not args.no_build,
        name=args.name, base_image=args.base_image,
    )
    try:
        res = run_pipeline(cfg, Progress(enabled=not args.quiet))
    except Exception as exc:
        from modeldeploy_model.evaluate import GateFailed
        from modeldeploy_model.pipeline import read_record

        if isinstance(exc, GateFailed):
            rec = read_record(args.workdir, "evaluate", "modeldeploy pipeline")
            _print_scores(rec["scores"], rec["selected"])
            _print_report_path(args.workdir, cfg.report)
        raise
    d = res.data
    print(f"data: {d.dataset}, {d.n_train}/{d.n_val}/{d.n_test} rows train/val/test, {d.data_hash[:23]}...")
    _print_scores(res.evaluate.scores, res.evaluate.selected)
    print(res.evaluate.gate.summary())
    _print_export(res.export)
    if res.explain:
        top = ", ".join(f"{k} {v:.3g}" for k, v in list(res.explain.importance.items())[:5])
        print(f"explain: {res.explain.explainer}; mean |SHAP|: {top}")
    print(f"artifact: {res.artifact_dir}  (serve: modeldeploy serve --artifact {res.artifact_dir})")
    if res.package is not None:
        print(f"model: {res.package.model_tag}")
        if res.package.bento_tag:
            print(f"bento: {res.package.bento_tag}  (serve: modeldeploy serve --bento {res.package.bento_tag})")
    print(f"records: {args.workdir / 'results'}")
    _print_report_path(args.workdir, cfg.report)
    return 0


def _print_report_path(workdir: Path, wanted: bool) -> None:
    from modeldeploy_model.report import INDEX, REPORT_DIR

    if wanted and (workdir / REPORT_DIR / INDEX).is_file():
        print(f"report: {workdir / REPORT_DIR / INDEX}  (rebuild: modeldeploy report --workdir {workdir})")


@_guard
def cmd_report(args: argparse.Namespace) -> int:
    from modeldeploy_model.pipeline import stage_report

    print(f"report: {stage_report(args.workdir)}")
    return 0


@_guard
def cmd_demo_artifact(args: argparse.Namespace) -> int:
    from modeldeploy_model.testing import build_test_artifact

    out = build_test_artifact(args.out, version_seed=args.version_seed, kind=args.kind, label_scale=args.label_scale)
    card = json.loads((out / "card.json").read_text())
    print(f"artifact {out}: {card['name']}:{card['version']} ({card['kind']}, runtime {card['runtime']})")
    return 0


@_guard
def cmd_serve(args: argparse.Namespace) -> int:
    from modeldeploy_model import config, faults
    from modeldeploy_model.runtime import check_artifact
    from modeldeploy_model.testing import SERVICE_IMPORT, base_env, serve_command

    if (args.artifact is None) == (args.bento is None):
        raise ValueError("give exactly one of --artifact DIR (a pipeline artifact) or --bento NAME:VERSION")
    faults.from_env(os.environ)  # refuse a malformed fault setting before starting anything
    extra: dict[str, str] = {}
    if args.artifact is not None:
        check_artifact(args.artifact)  # fail early with a clear message
        extra[config.ENV_ARTIFACT_DIR] = str(Path(args.artifact).resolve())
        target = SERVICE_IMPORT
    else:
        target = args.bento
    check_port_free(args.host, args.port)
    print(f"serving {target} on http://{args.host}:{args.port} (/predict /explain /metadata /metrics)", flush=True)
    # Become the server (exec) rather than wait for a child: `kill PID` of `modeldeploy serve &`, a supervisor's
    # SIGTERM and Ctrl-C then reach BentoML itself, which stops its workers. A waiting parent died alone and left
    # the server listening.
    command = serve_command(target, args.host, args.port)
    sys.stderr.flush()
    os.execve(command[0], command, base_env(extra))


def port(text: str) -> int:
    """--port: an integer 1..65535 (argparse type: rejected at parse time, exit code 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1..65535)") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is out of range: a port is 1..65535")
    return value


def check_port_free(host: str, port_: int) -> None:
    """Refuse a port something already listens on, before starting the server (its own error is a traceback)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # like the server: TIME_WAIT is no conflict
        try:
            s.bind((host, port_))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ValueError(f"port {port_} is in use: pick another with --port") from None
            raise ValueError(f"cannot listen on {host}:{port_}: {e.strerror}: check --host and --port") from None


@_guard
def cmd_containerize(args: argparse.Namespace) -> int:
    from modeldeploy_model.deploy import containerize

    tag = args.bento or _latest_bento(args.workdir)
    return containerize(tag, args.tag, backend=args.backend)


def _latest_bento(workdir: Path) -> str:
    from modeldeploy_model.pipeline import read_record

    rec = read_record(workdir, "package", f"modeldeploy package --workdir {workdir}")
    if not rec.get("bento_tag"):
        raise ValueError(f"no Bento was built in {workdir}; run `modeldeploy package --workdir {workdir}`")
    return str(rec["bento_tag"])


def _steps(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--steps {text!r}: give comma-separated integers, e.g. 10,25,50") from None


def _manifest_options(args: argparse.Namespace, image: str, bento: str, namespace: str) -> Any:
    from modeldeploy_model.deploy import ManifestOptions

    return ManifestOptions(
        name=args.name, image=image, bento=bento, namespace=namespace, port=args.port,
        replicas=args.replicas, strategy=args.strategy, steps=_steps(args.steps), interval=args.interval,
        prometheus=args.prometheus, max_error_rate=args.max_error_rate, max_latency_p99=args.max_latency_p99,
        max_drift=args.max_drift,
    )


@_guard
def cmd_manifest(args: argparse.Namespace) -> int:
    from modeldeploy_model.deploy import build_manifest, render

    bento = args.bento or _latest_bento(args.workdir)
    manifest = build_manifest(_manifest_options(args, args.image, bento, args.namespace))
    text = json.dumps(manifest, indent=2) + "\n" if args.output == "json" else render(manifest)
    if args.output_file:
        Path(args.output_file).write_text(text)
        print(f"wrote {args.output_file}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from modeldeploy_model.pipeline import PipelineConfig
    from modeldeploy_model.release import ReleaseError, ReleaseOptions, failure_line, release
    from modeldeploy_model.train import parse_kinds

    stage = "train"
    try:  # option errors are reported as the stage they belong to, before anything runs
        kinds = parse_kinds(args.models)
        train = _train_options(args)
        stage = "gate"
        thresholds = _thresholds(args)
        stage = "apply"
        manifest = _manifest_options(args, "", "", "")
    except (ValueError, FileNotFoundError) as exc:
        print(failure_line(stage, ReleaseError(str(exc), "fix the option; see `modeldeploy release --help`")),
              file=sys.stderr)
        return EXIT_USER_ERROR
    cfg = PipelineConfig(
        workdir=args.workdir, dataset=args.dataset, n_samples=args.samples, seed=args.seed, kinds=kinds,
        train=train, thresholds=thresholds, selection_metric=args.select_by, quantize=not args.no_quantize,
        tolerance_abs=args.tolerance, explain=False, report=False, package=True, build=True,
        name=args.bento_name, base_image=args.base_image,
    )
    return release(ReleaseOptions(
        pipeline=cfg, name=args.name, image=args.image, manifest=manifest, namespace=args.namespace,
        kubeconfig=args.kubeconfig, context=args.context, backend=args.backend, load=args.load,
        timeout=args.timeout, follow=not args.no_follow,
    ))


def _add_rollout(p: argparse.ArgumentParser, title: str | None = None) -> None:
    """The rollout options of a new ModelDeployment (manifest; release uses them only to create one)."""
    g = p.add_argument_group(title) if title else p
    g.add_argument("--port", type=port, default=3000, help="the model server's port in the pod (default 3000)")
    g.add_argument("--replicas", type=int, default=2, help="stable replicas (default 2)")
    g.add_argument("--strategy", choices=["Canary", "Rolling"], default="Canary",
                   help="how new model versions roll out (default Canary)")
    g.add_argument("--steps", default="10,25,50", help="canary traffic percentages (default 10,25,50)")
    g.add_argument("--interval", default="30s", help="time per canary step (default 30s)")
    g.add_argument("--prometheus", help="Prometheus address; adds the error-rate, latency-p99 and prediction-drift "
                                        "analysis")
    g.add_argument("--max-error-rate", type=float, default=0.01,
                   help="with --prometheus: highest canary error rate, 0..1 (default 0.01)")
    g.add_argument("--max-latency-p99", type=float, default=0.5,
                   help="with --prometheus: highest canary p99 latency in seconds (default 0.5)")
    g.add_argument("--max-drift", type=float, default=0.2,
                   help="with --prometheus: highest PSI of the canary's predictions against the stable's "
                        "(default 0.2; 0 leaves the check out)")


def _register_release(sub: argparse._SubParsersAction) -> None:
    from modeldeploy.cli_operator import add_kube_flags, duration
    from modeldeploy_model.release import parse_load

    p = sub.add_parser(
        "release", help="train -> gate -> export -> Bento -> image -> load -> apply -> follow the canary; exit "
                        "0 promoted, 3 gate failed, 4 rolled back, 5 degraded, 6 failed, 7 timed out, 1 error",
        description="One command from training to production: train and gate a model, export it with parity, "
                    "package a Bento, build its image, put the image where the cluster pulls from, apply the "
                    "ModelDeployment (an existing one gets only spec.model changed) and follow the rollout to "
                    "its end. Each stage prints one line; a failure prints `error: release failed at stage S: "
                    "CAUSE. fix: ...`.")
    _add_workdir(p)
    _add_data_train(p)
    _add_gate(p)
    _add_export(p)
    p.add_argument("--name", required=True, help="the ModelDeployment to release to (created if missing)")
    add_kube_flags(p)
    p.add_argument("--image", required=True, metavar="REPO[:TAG]",
                   help="the image to build, e.g. registry.example/room-price (TAG defaults to the model version)")
    p.add_argument("--bento-name", default="room_price", help="BentoML model and Bento name (default room_price)")
    p.add_argument("--base-image", default=None,
                   help="the Bento image's base (default: $MODELDEPLOY_BASE_IMAGE, else BentoML's python:3.11-slim)")
    p.add_argument("--backend", choices=["auto", "docker", "buildah"], default="auto",
                   help="image builder (default auto: docker when an engine answers, else buildah when installed)")
    p.add_argument("--load", type=parse_load, required=True, metavar="TARGET",
                   help="where the cluster pulls from: containerd[=SOCKET] (import into the node's containerd, "
                        "default socket /run/containerd/containerd.sock), kind[=CLUSTER] (kind load, default "
                        "cluster kind), push (to the registry in --image) or none")
    p.add_argument("--timeout", type=duration, default=None,
                   help="give up following after this long (seconds or 30s, 10m, ...): exit code 7 (default: none)")
    p.add_argument("--no-follow", action="store_true", help="stop after the apply (exit 0 once it is accepted)")
    _add_rollout(p, "for a new ModelDeployment (an existing one keeps its own rollout settings)")
    p.set_defaults(func=cmd_release)


# --- registration ----------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    """Add the model-side subcommands to the ``modeldeploy`` parser."""
    p = sub.add_parser("train", help="prepare data (split) and train models")
    _add_workdir(p)
    _add_data_train(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", aliases=["gate"],
                       help="score trained models, select by validation, apply the quality gate (alias: gate)")
    _add_workdir(p)
    _add_gate(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="ONNX / int8 export with parity check; writes WORKDIR/artifact")
    _add_workdir(p)
    _add_export(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("explain", help="SHAP attributions for the exported model")
    _add_workdir(p)
    p.add_argument("--rows", type=int, default=50, help="test rows to explain for global importance (default 50)")
    p.add_argument("--artifact", type=Path, help="explain rows given with --row against this artifact instead")
    p.add_argument("--row", action="append", default=[], help="a JSON list of feature values (with --artifact)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("package", help="save the artifact to BentoML's model store and `bentoml build` a Bento")
    _add_workdir(p)
    _add_package(p)
    p.add_argument("--artifact", type=Path, help="package this artifact directory instead of WORKDIR/artifact")
    p.set_defaults(func=cmd_package)

    p = sub.add_parser("pipeline", help="all stages: data, train, evaluate+gate, export, explain, package")
    _add_workdir(p)
    _add_data_train(p)
    _add_gate(p)
    _add_export(p)
    _add_package(p)
    p.add_argument("--no-package", action="store_true", help="stop after explain (no BentoML store or build)")
    _add_progress_report(p)
    p.set_defaults(func=cmd_pipeline)
    _register_report(sub)

    p = sub.add_parser("serve", help="serve an artifact or a Bento with `bentoml serve` (foreground)")
    p.add_argument("--artifact", type=Path, help="pipeline artifact directory (e.g. WORKDIR/artifact)")
    p.add_argument("--bento", help="Bento tag, e.g. room_price:latest")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=3000, help="port to listen on, 1..65535 (default 3000)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo-artifact", help="train a tiny scikit-learn model and write its artifact (for tests)")
    p.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    p.add_argument("--version-seed", type=int, default=0, help="different seeds give different model versions")
    p.add_argument("--kind", default="ridge", choices=["linear", "ridge", "forest", "gbt", "mlp"],
                   help="scikit-learn model kind (default ridge)")
    p.add_argument("--label-scale", type=float, default=1.0,
                   help="train on labels multiplied by this: a deliberate bug for drift demos (default 1)")
    p.set_defaults(func=cmd_demo_artifact)

    p = sub.add_parser("containerize", help="`bentoml containerize` the Bento (needs a Docker engine or buildah)")
    _add_workdir(p)
    p.add_argument("--bento", help="Bento tag (default: the one `package` built in WORKDIR)")
    p.add_argument("-t", "--tag", help="image tag, e.g. registry.example/room-price:2f1c")
    p.add_argument("--backend", choices=["auto", "docker", "buildah"], default="auto",
                   help="image builder (default auto: docker when an engine answers, else buildah when installed)")
    p.set_defaults(func=cmd_containerize)

    p = sub.add_parser("manifest", help="print a ModelDeployment for a built image (YAML, or -o json)")
    _add_workdir(p)
    p.add_argument("--name", required=True, help="ModelDeployment name (a Kubernetes name)")
    p.add_argument("--image", required=True, help="container image built from the Bento")
    p.add_argument("--bento", help="Bento tag (default: the one `package` built in WORKDIR)")
    p.add_argument("-n", "--namespace", default="default", help="the object's namespace (default: default)")
    _add_rollout(p)
    p.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml", help="output format (default yaml)")
    p.add_argument("--output-file", type=Path, help="write to this file instead of stdout")
    p.set_defaults(func=cmd_manifest)
    _register_release(sub)
