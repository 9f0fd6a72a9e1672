"""``modeldeploy release``: one command from training to production, for people and for CI.

    train -> gate -> export (parity) -> package (Bento) -> image -> load -> apply -> follow

    modeldeploy release --name room-price -n ml --gate 'r2>=0.8' \
        --image registry.example/room-price --load push --timeout 15m
    modeldeploy release --name price --image localhost/modeldeploy/room-price \
        --base-image localhost/modeldeploy/base:... --backend buildah \
        --load containerd=/path/to/containerd.sock          # a node without a registry

Why one command and not a script of the others: a release is only as good as its weakest hand-off
(a Bento built from the wrong work directory, an image tag that does not match the Bento, a
ModelDeployment re-applied from a stale file that resets the team's rollout settings). Here every
stage takes the previous stage's output, and the exit status says how it ended, so a CI job can
branch on it: 0 promoted, 3 quality gate failed, 4 rolled back, 5 degraded, 6 failed, 7 the
follow timed out, 1 any other stage error (the table is ``modeldeploy.exitcodes``).

Why a stage list and a runner: the order, the numbering (``[3/8] export: ...``), the timing and
above all the failure line are the same for every stage and are tested without servers. Each
stage is a function from the shared :class:`Context` to a one-line summary; a failure becomes
exactly one line ``error: release failed at stage S: CAUSE. fix: WHAT TO DO`` (a
:class:`ReleaseError`, or any other exception mapped to the stage's default fix). Stages can
also have a *check* that runs before any stage does: a missing builder, ``ctr``, containerd
socket or API server is reported in seconds, not after minutes of training and image building.

Why patch only ``spec.model`` of an existing ModelDeployment: its rollout settings (steps,
analysis, thresholds, autoscaling) belong to whoever owns the object (a platform team, a GitOps
repo); a release changes *which model* runs, nothing else. Only a new object gets the rollout
options given here (``--steps``, ``--prometheus``, ... built by :func:`deploy.build_manifest`).

Why "promoted" is checked, not assumed: ``Healthy`` only means the object is serving; the release
succeeded when the status was computed for the applied generation *and* its stable revision is
the released image and Bento. Following reuses ``modeldeploy status --watch``.

Heavy imports (the ML stack, BentoML, the Kubernetes client) happen inside the stages, so the
pure parts here load fast and are unit-tested without servers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from modeldeploy import exitcodes

if TYPE_CHECKING:
    from modeldeploy_model.deploy import ManifestOptions
    from modeldeploy_model.pipeline import PipelineConfig

DEFAULT_CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
DEFAULT_KIND_CLUSTER = "kind"
LOAD_KINDS = ("containerd", "kind", "push", "none")
CTR_NAMESPACE = "k8s.io"  # the containerd namespace the kubelet's CRI sees
LOG_TAIL_LINES = 3


class ReleaseError(Exception):
    """A stage failed: what went wrong (``cause``), what to do about it (``fix``) and the exit code."""

    def __init__(self, cause: str, fix: str, code: int = exitcodes.ERROR) -> None:
        super().__init__(cause)
        self.cause = cause
        self.fix = fix
        self.code = code


# --- options ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadTarget:
    """Where the cluster pulls images from: ``containerd`` (a socket), ``kind`` (a cluster), ``push``, ``none``."""

    kind: str
    value: str = ""

    def __str__(self) -> str:
        return f"{self.kind}={self.value}" if self.value else self.kind


def parse_load(text: str) -> LoadTarget:
    """--load: ``containerd[=SOCKET]``, ``kind[=CLUSTER]``, ``push`` or ``none`` (argparse type)."""
    kind, sep, value = text.partition("=")
    if kind not in LOAD_KINDS:
        raise argparse.ArgumentTypeError(f"{text!r}: choose containerd[=SOCKET], kind[=CLUSTER], push or none")
    if kind in ("push", "none") and sep:
        raise argparse.ArgumentTypeError(f"{text!r}: {kind} takes no value")
    if sep and not value:
        raise argparse.ArgumentTypeError(f"{text!r}: give a value after '=' or leave the '=' out")
    default = {"containerd": DEFAULT_CONTAINERD_SOCKET, "kind": DEFAULT_KIND_CLUSTER}.get(kind, "")
    return LoadTarget(kind, value or default)


def split_image(image: str) -> tuple[str, str | None]:
    """``REPO[:TAG]`` -> (REPO, TAG or None); a registry's port (``host:5000/repo``) is not a tag."""
    if "@" in image:
        raise ReleaseError(f"--image {image!r} has a digest", "give REPO or REPO:TAG: the digest is only known "
                                                              "after the build")
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = image.rsplit(":", 1)
        return repo, tag
    return image, None


def image_reference(image: str, model_version: str) -> str:
    """The image to build: ``--image`` as given, tagged with the model version when it has no tag."""
    repo, tag = split_image(image)
    return f"{repo}:{tag or model_version}"


@dataclass
class ReleaseOptions:
    """Everything ``modeldeploy release`` was told (built by the CLI; plain data)."""

    pipeline: PipelineConfig          # data, train, gate and export options; pipeline.name is the Bento's name
    name: str                         # the ModelDeployment
    image: str                        # REPO[:TAG] (TAG defaults to the model version)
    manifest: ManifestOptions         # for a new object: its rollout settings (name/image/bento filled in later)
    namespace: str = ""               # "" -> the kubeconfig context's namespace, else default
    kubeconfig: str | None = None
    context: str | None = None
    backend: str = "auto"
    load: LoadTarget = field(default_factory=lambda: LoadTarget("containerd", DEFAULT_CONTAINERD_SOCKET))
    timeout: float | None = None
    follow: bool = True


@dataclass
class Context:
    """What the stages hand each other."""

    opts: ReleaseOptions
    started: float = field(default_factory=time.monotonic)
    backend: str = ""                 # docker or buildah, chosen by the image stage's check
    conn: Any = None                  # cli_operator.Conn, from the apply stage's check
    existing: dict[str, Any] | None = None  # the ModelDeployment before the release (None: create it)
    model_version: str = ""
    bento: str = ""
    image: str = ""
    applied: dict[str, Any] | None = None   # the object the API server returned from the create/patch
    unchanged: bool = False           # the object already named this image and Bento
    outcome: str = ""                 # the final line

    @property
    def workdir(self) -> Path:
        return Path(self.opts.pipeline.workdir)

    def log(self, stage: str) -> Path:
        d = self.workdir / "logs"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"release-{stage}.log"


# --- the runner ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Context], str]      # returns the summary printed after the stage's name
    fix: str                           # what to do when it fails in a way its own errors do not explain
    check: Callable[[Context], None] | None = None  # runs before any stage: fail fast


class Reporter:
    """Stage lines on ``out``: ``[i/n] name ...`` when a stage starts, ``[i/n] name: summary  3.2s`` when it ends.

    On a terminal the start line is replaced by the end line; in a CI log both stay (a long image
    build shows that it started)."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self._open = False

    def start(self, prefix: str, name: str) -> None:
        if self.tty:
            self.out.write(f"{prefix} {name} ...")
            self._open = True
        else:
            self.out.write(f"{prefix} {name} ...\n")
        self.out.flush()

    def line(self, text: str) -> None:
        """A line printed while a stage runs (follow's rollout lines)."""
        self._close()
        self.out.write(text + "\n")
        self.out.flush()

    def done(self, prefix: str, name: str, summary: str, seconds: float) -> None:
        if self._open:
            self.out.write("\r\033[K")
            self._open = False
        self.out.write(f"{prefix} {name}: {summary}  {format_seconds(seconds)}\n")
        self.out.flush()

    def failed(self, stage: str, err: ReleaseError) -> None:
        self._close()
        self.out.flush()
        self.err.write(failure_line(stage, err) + "\n")
        self.err.flush()

    def close_line(self) -> None:
        """End a start line left open on a terminal, before someone else prints (status --watch's lines)."""
        self._close()
        self.out.flush()

    def _close(self) -> None:
        if self._open:
            self.out.write("\n")
            self._open = False


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m{s:02d}s"


def failure_line(stage: str, err: ReleaseError) -> str:
    """The one line every failure is: ``error: release failed at stage S: CAUSE. fix: FIX``."""
    cause = " ".join(err.cause.split()).rstrip(". ")
    return f"error: release failed at stage {stage}: {cause}. fix: {err.fix}"


def as_release_error(stage: Stage, exc: BaseException) -> ReleaseError:
    """Any exception a stage raised, as a ReleaseError naming a fix (the stage's default when nothing better)."""
    if isinstance(exc, ReleaseError):
        return exc
    from modeldeploy.exitcodes import CLIError

    if isinstance(exc, CLIError):
        return ReleaseError(str(exc), stage.fix, exc.code)
    text = str(exc).strip() or type(exc).__name__
    known = ("StageError", "ArtifactError", "PackageError", "DeployError", "GateFailed", "ValueError",
             "FileNotFoundError")
    cause = text if type(exc).__name__ in known else f"{type(exc).__name__}: {text}"
    return ReleaseError(cause.splitlines()[0], stage.fix)


def run_stages(stages: list[Stage], ctx: Context, reporter: Reporter) -> int:
    """Checks first (all of them), then the stages in order; the first failure ends the release with its code."""
    n = len(stages)
    for stage in stages:
        if stage.check is None:
            continue
        try:
            stage.check(ctx)
        except Exception as exc:  # every failure becomes its one line
            err = as_release_error(stage, exc)
            reporter.failed(stage.name, err)
            return err.code
    for i, stage in enumerate(stages, 1):
        prefix = f"[{i}/{n}]"
        reporter.start(prefix, stage.name)
        t0 = time.monotonic()
        try:
            summary = stage.run(ctx)
        except Exception as exc:
            err = as_release_error(stage, exc)
            reporter.failed(stage.name, err)
            if ctx.outcome:
                reporter.line(ctx.outcome)
            return err.code
        reporter.done(prefix, stage.name, summary, time.monotonic() - t0)
    if ctx.outcome:
        reporter.line(ctx.outcome)
    return exitcodes.OK


# --- pure decisions --------------------------------------------------------------------------


def export_command(backend: str, source: str, image: str, archive: Path) -> list[str]:
    """Write the built image as a ``docker save``-style archive named ``image``.

    buildah exports by image ID (``source``): by name it would add its own ``localhost/`` name too."""
    if backend == "buildah":
        return ["buildah", "push", "--quiet", source, f"docker-archive:{archive}:{image}"]
    return ["docker", "save", "-o", str(archive), image]


def load_commands(target: LoadTarget, backend: str, image: str, archive: Path, source: str | None = None
                  ) -> list[list[str]]:
    """The command lines that put the built image where the cluster pulls from (none for ``--load none``)."""
    if target.kind == "none":
        return []
    if target.kind == "push":
        if backend == "buildah":
            return [["buildah", "push", image, f"docker://{image}"]]
        return [["docker", "push", image]]
    export = export_command(backend, source or image, image, archive)
    if target.kind == "containerd":
        return [export, ["ctr", "--address", target.value, "-n", CTR_NAMESPACE, "images", "import",
                         "--all-platforms", str(archive)]]
    if target.kind == "kind":
        return [export, ["kind", "load", "image-archive", str(archive), "--name", target.value]]
    raise ValueError(f"unknown load target {target}")


def command_label(cmd: list[str]) -> str:
    """What a failure line calls a command: ``ctr images import``, ``kind load``, ``buildah push``, ..."""
    words = [w for w in cmd if not w.startswith("-")]
    if cmd[0] == "ctr":
        return "ctr images import"
    return " ".join(words[:2])


def load_tools(target: LoadTarget, backend: str) -> list[str]:
    """The executables ``--load`` needs besides the builder."""
    return {"containerd": ["ctr"], "kind": ["kind"]}.get(target.kind, [])


def model_patch(image: str, bento: str) -> dict[str, Any]:
    """A merge patch that changes which model an existing ModelDeployment runs, and nothing else."""
    return {"spec": {"model": {"image": image, "bento": bento}}}


@dataclass(frozen=True)
class ApplyPlan:
    action: str                        # "create" or "patch"
    body: dict[str, Any]
    unchanged: bool = False            # patch: the object already names this image and Bento


def plan_apply(existing: dict[str, Any] | None, manifest: ManifestOptions, image: str, bento: str) -> ApplyPlan:
    """Create the object from the rollout options, or patch only spec.model of the one that exists."""
    if existing is None:
        from dataclasses import replace

        from modeldeploy_model.deploy import build_manifest

        return ApplyPlan("create", build_manifest(replace(manifest, image=image, bento=bento)))
    model = (existing.get("spec") or {}).get("model") or {}
    same = model.get("image") == image and model.get("bento") == bento
    return ApplyPlan("patch", model_patch(image, bento), unchanged=same)


def follow_line(obj: dict[str, Any], prefix: str) -> str:
    """One line per change of the rollout: ``[8/8] follow: Progressing step 2/3 weight 50%  message``."""
    st = obj.get("status") or {}
    steps = (((obj.get("spec") or {}).get("rollout") or {}).get("canary") or {}).get("steps") or []
    phase = str(st.get("phase") or "Pending")
    generation = int((obj.get("metadata") or {}).get("generation") or 0)
    if int(st.get("observedGeneration") or 0) < generation:  # the status still describes the spec before ours
        return f"{prefix} follow: waiting for the operator to act on generation {generation} (still {phase})"
    step = int(st.get("currentStep") or 0)
    parts = [f"{prefix} follow: {phase}"]
    if step:
        parts.append(f"step {step}/{len(steps)} weight {int(st.get('canaryWeight') or 0)}%")
    timeline = st.get("timeline") or []
    if step and timeline and timeline[-1].get("verdict"):
        parts.append(f"last {timeline[-1]['verdict']}")
    line = " ".join(parts)
    message = str(st.get("message") or "")
    return f"{line}  {message}" if message else line


def outcome(obj: dict[str, Any], image: str, bento: str) -> tuple[int, str, str]:
    """How a followed release ended: (exit code, cause, fix); code 0 means promoted.

    Healthy is a success only with the released revision as stable (someone may have applied
    another one meanwhile)."""
    meta = obj.get("metadata") or {}
    where = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    st = obj.get("status") or {}
    phase = str(st.get("phase") or "Pending")
    message = str(st.get("message") or "").rstrip(". ")
    status_cmd = f"modeldeploy status {meta.get('name', '')} -n {meta.get('namespace', '')} -o wide"
    stable = st.get("stable") or {}
    if phase == "Healthy":
        if stable.get("image") == image and stable.get("bento") == bento:
            return exitcodes.OK, "", ""
        return (exitcodes.ERROR,
                f"{where} is Healthy but its stable revision is {stable.get('bento') or stable.get('image')}, not "
                f"{bento}: the spec was changed again while the release was followed",
                f"see `{status_cmd}` (History) and `kubectl get mdep {meta.get('name', '')} -o yaml`, then release "
                "again")
    kept = stable.get("bento") or stable.get("image") or "the previous revision"
    if phase == "RolledBack":
        return (exitcodes.ROLLED_BACK, f"{where} rolled back {bento}: {message or 'no message'}",
                f"{kept} keeps serving; see the failed analyses with `{status_cmd}`, fix the model and release again")
    if phase == "Failed":
        return (exitcodes.FAILED, f"{where} failed: {message or 'no message'}",
                f"see `{status_cmd}` and the object's Events (`kubectl describe mdep {meta.get('name', '')}`)")
    if phase == "Degraded":
        return (exitcodes.DEGRADED, f"{where} is Degraded: {message or 'no message'}",
                f"see `{status_cmd}` and `kubectl describe mdep {meta.get('name', '')}` (an image the node cannot "
                "find: check --load and --image)")
    return (exitcodes.for_phase(phase) or exitcodes.ERROR, f"{where} ended in phase {phase}: {message}",
            f"see `{status_cmd}`")


# --- the stages ------------------------------------------------------------------------------


def _stage_train(ctx: Context) -> str:
    from modeldeploy_model.pipeline import stage_data, stage_train

    cfg = ctx.opts.pipeline
    d = stage_data(ctx.workdir, cfg.dataset, cfg.n_samples, cfg.seed)
    t = stage_train(ctx.workdir, cfg.kinds, cfg.train)
    kinds = ", ".join(m["kind"] for m in t.models)
    return f"{kinds} on {d.dataset} ({d.n_train}/{d.n_val}/{d.n_test} rows train/val/test)"


def gate_summary(checks: list[Any]) -> str:
    """``r2 0.91 >= 0.8, rmse 12.1 <= 15`` from the gate's checks."""
    return ", ".join(f"{c.metric} {c.value:.4g} {c.op} {c.threshold:g}" for c in checks)


def _stage_gate(ctx: Context) -> str:
    from modeldeploy_model.evaluate import GateFailed
    from modeldeploy_model.pipeline import stage_evaluate

    cfg = ctx.opts.pipeline
    try:
        res = stage_evaluate(ctx.workdir, cfg.thresholds, cfg.selection_metric)
    except GateFailed as exc:
        failed = exc.result.failures()
        cause = "quality gate failed: " + "; ".join(
            f"{c.metric} = {c.value:.4g} on the test split, wanted {c.op} {c.threshold:g}" for c in failed)
        raise ReleaseError(cause, "improve the model (--models, --samples, --epochs) or relax the --gate "
                                  "threshold; nothing was exported, built or deployed",
                           exitcodes.GATE_FAILED) from None
    chosen = f"{res.selected} (best validation {res.selection_metric})"
    if not res.gate.checks:
        return f"no thresholds given, {chosen} (add --gate METRIC>=VALUE to enforce one)"
    return f"passed ({gate_summary(res.gate.checks)}), {chosen}"


def _stage_export(ctx: Context) -> str:
    from modeldeploy_model import runtime
    from modeldeploy_model.pipeline import stage_export

    cfg = ctx.opts.pipeline
    res = stage_export(ctx.workdir, quantize=cfg.quantize, tolerance_abs=cfg.tolerance_abs, name=cfg.name)
    card = runtime.load_card(ctx.workdir / "artifact")
    ctx.model_version = str(card["version"])
    parity = next((p for p in res.parity if p.runtime == res.chosen_runtime), None)
    at = (f", parity max|diff| {parity.max_abs_diff:.3g} <= {parity.tolerance_abs:.3g}" if parity is not None
          else " (native, no export needed)")
    return f"runtime {res.chosen_runtime}{at}; model version {ctx.model_version}"


def _stage_package(ctx: Context) -> str:
    from modeldeploy_model.package import package
    from modeldeploy_model.pipeline import record

    cfg = ctx.opts.pipeline
    res = package(ctx.workdir / "artifact", name=cfg.name, build=True, base_image=cfg.base_image)
    record(ctx.workdir, "package", res.to_dict())
    if not res.bento_tag:
        raise ReleaseError("`bentoml build` returned no Bento", "run `modeldeploy package --workdir "
                                                                f"{ctx.workdir}` to see BentoML's output")
    ctx.bento = res.bento_tag
    base = cfg.base_image or os.environ.get("MODELDEPLOY_BASE_IMAGE") or "BentoML's default"
    return f"bento {ctx.bento} (base {base})"


def _check_image(ctx: Context) -> None:
    from modeldeploy.api import IMAGE_RULE
    from modeldeploy_model.deploy import DeployError, choose_backend

    probe = image_reference(ctx.opts.image, "0")
    if not IMAGE_RULE.check(probe):
        raise ReleaseError(f"--image {ctx.opts.image!r} is not an image reference: {IMAGE_RULE.message}",
                           "give REPO or REPO:TAG, e.g. --image registry.example/room-price (the tag defaults to "
                           "the model version)")
    try:
        ctx.backend = choose_backend(ctx.opts.backend)
    except DeployError as exc:
        raise ReleaseError(f"no image builder: {exc}",
                           "apt-get install buildah (and use --backend buildah or auto) or start a Docker engine") \
            from None


def _run_logged(cmd: list[str], log: Path, what: str, fix: str, timeout: float | None = None) -> None:
    """Run ``cmd`` with its output appended to ``log``; a failure is a ReleaseError with the log's last lines."""
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        try:
            code = subprocess.call(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                   timeout=timeout)
        except FileNotFoundError:
            raise ReleaseError(f"{what}: no `{cmd[0]}` on PATH", fix) from None
        except subprocess.TimeoutExpired:
            raise ReleaseError(f"{what}: `{cmd[0]}` did not finish within {timeout:g}s (log {log})", fix) from None
    if code != 0:
        tail = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-LOG_TAIL_LINES:]
        raise ReleaseError(f"{what} exited with {code} (log {log}): {' | '.join(tail)}", fix)


def _stage_image(ctx: Context) -> str:
    from modeldeploy_model.deploy import bento_base_image, containerize_command

    ctx.image = image_reference(ctx.opts.image, ctx.model_version)
    base = bento_base_image(ctx.bento) if ctx.backend == "buildah" else None
    log = ctx.log("image")
    log.write_text("")
    _run_logged(containerize_command(ctx.bento, ctx.image, ctx.backend, base), log, "bentoml containerize",
                f"read {log}; the Bento {ctx.bento} is built, so `modeldeploy containerize --bento {ctx.bento} "
                f"-t {ctx.image} --backend {ctx.backend}` retries only this stage (a missing base image: pass "
                "--base-image or build it first)")
    return f"{ctx.image} with {ctx.backend} (log {log})"


def _check_load(ctx: Context) -> None:
    target = ctx.opts.load
    for tool in load_tools(target, ctx.opts.backend):
        if shutil.which(tool) is None:
            hint = {"ctr": "install containerd's `ctr` (Debian: apt-get install containerd)",
                    "kind": "install kind (https://kind.sigs.k8s.io)"}[tool]
            raise ReleaseError(f"--load {target}: no `{tool}` on PATH",
                               f"{hint}, or choose another target: --load containerd=SOCKET, kind[=CLUSTER], push "
                               "or none")
    if target.kind == "containerd" and not Path(target.value).is_socket():
        raise ReleaseError(f"no containerd socket at {target.value}",
                           "name the node's containerd socket with --load containerd=SOCKET (containerd's "
                           "[grpc] address; k3s: /run/k3s/containerd/containerd.sock), or use --load kind, push or "
                           "none")


def _buildah_image_id(image: str) -> str:
    proc = subprocess.run(["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", image],
                          capture_output=True, text=True, check=False)
    out = proc.stdout.strip()
    if proc.returncode != 0 or not out:
        said = (proc.stderr or "").strip().splitlines()
        raise ReleaseError(f"buildah has no image {image}" + (f" ({said[-1]})" if said else ""),
                           "the image stage built it into another store: run release with the same "
                           "CONTAINERS_STORAGE_CONF as the build")
    return out.removeprefix("sha256:")


def _stage_load(ctx: Context) -> str:
    target = ctx.opts.load
    if target.kind == "none":
        return f"skipped (--load none: {ctx.image} stays in the {ctx.backend} store; load it where the cluster pulls)"
    log = ctx.log("load")
    log.write_text("")
    archive = ctx.workdir / "image.tar"
    archive.unlink(missing_ok=True)
    source = _buildah_image_id(ctx.image) if ctx.backend == "buildah" and target.kind != "push" else None
    fixes = {
        "containerd": f"check that {target.value} is the containerd the kubelet uses (--load containerd=SOCKET) "
                      "and that you may write to it (root)",
        "kind": f"check the cluster name (`kind get clusters`; --load kind=CLUSTER, now {target.value})",
        "push": f"log in to the registry of {ctx.image} (`{ctx.backend} login`) or fix --image",
    }
    try:
        for cmd in load_commands(target, ctx.backend, ctx.image, archive, source):
            exporting = str(archive) in " ".join(cmd) and cmd[0] in ("buildah", "docker")
            fix = (f"the image archive is written to {archive}: check the free space there (or use --workdir "
                   "elsewhere)") if exporting else fixes[target.kind]
            _run_logged(cmd, log, command_label(cmd), fix, timeout=1800)
    finally:
        archive.unlink(missing_ok=True)
    where = {"containerd": f"into containerd at {target.value} (namespace {CTR_NAMESPACE})",
             "kind": f"into kind cluster {target.value}", "push": "pushed to its registry"}[target.kind]
    return f"{ctx.image} {where}"


def _kube_args(opts: ReleaseOptions) -> argparse.Namespace:
    return argparse.Namespace(namespace=opts.namespace, kubeconfig=opts.kubeconfig, context=opts.context)


def read_existing(conn: Any, name: str) -> dict[str, Any] | None:
    """The ModelDeployment, or None when it does not exist (a missing CRD is an error, not None)."""
    from kubernetes.client.rest import ApiException

    from modeldeploy import GROUP, PLURAL, VERSION
    from modeldeploy.cli_operator import REQUEST_TIMEOUT, _api_message, api_error, api_errors

    with api_errors(conn, name):
        try:
            obj: dict[str, Any] = conn.api.get_namespaced_custom_object(
                GROUP, VERSION, conn.namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT)
            return obj
        except ApiException as e:
            if e.status == 404 and "could not find the requested resource" not in _api_message(e):
                return None
            raise api_error(e, conn, name) from None


def _check_apply(ctx: Context) -> None:
    from dataclasses import replace

    from modeldeploy.cli_operator import connect
    from modeldeploy_model.deploy import DeployError, validate

    opts = ctx.opts
    ctx.conn = connect(_kube_args(opts))
    try:
        ctx.existing = read_existing(ctx.conn, opts.name)
    except exitcodes.CLIError as exc:
        raise ReleaseError(str(exc), "check --kubeconfig / --context / -n (and that the CRD is installed: "
                                     "kubectl apply -f crds/)") from None
    if ctx.existing is None:  # the rollout options of a new object are checked now, not after the build
        try:
            validate(replace(opts.manifest, name=opts.name, namespace=ctx.conn.namespace,
                             image=image_reference(opts.image, "0"), bento=f"{opts.pipeline.name}:0"))
        except DeployError as exc:
            raise ReleaseError(str(exc), "fix the option the message names (these apply only to a new "
                                         "ModelDeployment)") from None


def _stage_apply(ctx: Context) -> str:
    from dataclasses import replace

    from modeldeploy import GROUP, PLURAL, VERSION
    from modeldeploy.cli_operator import REQUEST_TIMEOUT, api_errors

    conn, name = ctx.conn, ctx.opts.name
    where = f"{conn.namespace}/{name}"
    try:  # again: the build took minutes, someone may have created (or deleted) it meanwhile
        ctx.existing = read_existing(conn, name)
    except exitcodes.CLIError as exc:
        raise ReleaseError(str(exc), "check that the cluster is still reachable, then release again") from None
    plan = plan_apply(ctx.existing, replace(ctx.opts.manifest, name=name, namespace=conn.namespace), ctx.image,
                      ctx.bento)
    ctx.unchanged = plan.unchanged
    fix = ("the API server's message names the field; for a new object fix that option (--steps, --interval, "
           "--prometheus, ...), for an existing one its spec (kubectl edit mdep " + name + ")")
    try:
        with api_errors(conn, name):
            if plan.action == "create":
                ctx.applied = conn.api.create_namespaced_custom_object(
                    GROUP, VERSION, conn.namespace, PLURAL, plan.body, _request_timeout=REQUEST_TIMEOUT)
            else:
                ctx.applied = conn.api.patch_namespaced_custom_object(
                    GROUP, VERSION, conn.namespace, PLURAL, name, plan.body, _request_timeout=REQUEST_TIMEOUT)
    except exitcodes.CLIError as exc:
        raise ReleaseError(f"the API server refused to {plan.action} {where}: {exc}", fix) from None
    assert ctx.applied is not None
    generation = ctx.applied["metadata"].get("generation")
    if plan.action == "create":
        return f"created {where} (generation {generation})"
    if plan.unchanged:
        return f"{where} already runs {ctx.bento} ({ctx.image}): nothing to change"
    return f"patched spec.model of {where} to {ctx.bento} (generation {generation}; rollout settings kept)"


def _stage_follow(ctx: Context, reporter: Reporter, prefix: str) -> str:
    from modeldeploy.cli_operator import get, watch

    assert ctx.applied is not None
    conn, name = ctx.conn, ctx.opts.name
    def line(obj: dict[str, Any]) -> str:
        reporter.close_line()  # watch prints the line itself, on stdout
        return follow_line(obj, prefix)

    try:
        code = watch(conn, ctx.applied, ctx.opts.timeout, line=line)
    except exitcodes.CLIError as exc:
        if exc.code == exitcodes.WATCH_TIMEOUT:
            ctx.outcome = str(exc)
            raise ReleaseError(str(exc), f"raise --timeout, or keep watching with `modeldeploy status {name} -n "
                                         f"{conn.namespace} --watch`; the rollout goes on without us",
                               exitcodes.WATCH_TIMEOUT) from None
        raise
    final = get(conn, name)
    rc, cause, fix = outcome(final, ctx.image, ctx.bento)
    if rc != exitcodes.OK or code != exitcodes.OK:
        msg = str((final.get("status") or {}).get("message") or "")
        label = {exitcodes.ROLLED_BACK: "rolled back", exitcodes.DEGRADED: "degraded",
                 exitcodes.FAILED: "failed"}.get(rc, "not promoted")
        ctx.outcome = f"{label}: {msg}" if msg else label
        raise ReleaseError(cause, fix, rc)
    elapsed = format_seconds(time.monotonic() - ctx.started)
    ctx.outcome = f"released: promoted {ctx.bento} in {elapsed}" if not ctx.unchanged else \
        f"released: {ctx.bento} was already the stable revision ({elapsed})"
    return f"Healthy, stable {ctx.bento}"


def stages(opts: ReleaseOptions, reporter: Reporter) -> list[Stage]:
    """The release, in order. ``--no-follow`` drops the follow stage."""
    out = [
        Stage("train", _stage_train, "check --dataset, --samples and --models (`modeldeploy train --help`)"),
        Stage("gate", _stage_gate, "check the --gate thresholds (`modeldeploy evaluate --help`)"),
        Stage("export", _stage_export, "retry with --no-quantize or a larger --tolerance"),
        Stage("package", _stage_package, "check that BentoML works here (`bentoml list`) and that --bento-name is "
                                         "a valid Bento name"),
        Stage("image", _stage_image, "see the image log in WORKDIR/logs", _check_image),
        Stage("load", _stage_load, "check --load", _check_load),
        Stage("apply", _stage_apply, "check --kubeconfig / --context / -n", _check_apply),
    ]
    if opts.follow:
        n = len(out) + 1
        out.append(Stage("follow", lambda c: _stage_follow(c, reporter, f"[{n}/{n}]"),
                         f"see `modeldeploy status {opts.name} --watch`"))
    return out


def release(opts: ReleaseOptions, reporter: Reporter | None = None) -> int:
    """Run the release; returns the exit code (0 promoted, 3 gate, 4 rolled back, 5, 6, 7, 1)."""
    reporter = reporter or Reporter()
    ctx = Context(opts)
    with _quiet_logs():
        code = run_stages(stages(opts, reporter), ctx, reporter)
    if code == exitcodes.OK and not opts.follow:
        reporter.line(f"released: applied {ctx.bento} ({ctx.image}) to {ctx.conn.namespace}/{opts.name}; not "
                      f"followed (modeldeploy status {opts.name} -n {ctx.conn.namespace} --watch)")
    return code


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """BentoML logs its build at INFO on stderr: between the stage lines only warnings are kept."""
    import logging

    logger = logging.getLogger("bentoml")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)
