"""Operator-side CLI: run the operator, and inspect and steer rollouts, the way kubectl does.

    modeldeploy operator [-n NS ...]              run the operator (in-cluster config or the kubeconfig)
    modeldeploy status NAME [-o json|yaml|wide]   phase, step, weights, analyses, timeline, history
    modeldeploy status NAME --watch [--timeout 10m]   follow the rollout until it ends
    modeldeploy promote|abort NAME                promote the canary now / roll it back now
    modeldeploy pause|resume NAME                 hold / continue the rollout (spec.paused)

Every command that talks to the cluster takes kubectl's `-n/--namespace`, `--kubeconfig` and
`--context`, with kubectl's defaults ($KUBECONFIG, the current context, the context's namespace).
Failures are one line and an exit code from `modeldeploy.exitcodes` (`status` is non-zero for
RolledBack, Degraded and Failed): no urllib3 retries and a short connect timeout, so an API
server that is down is reported in seconds, not after three silent retries.

promote and abort set the annotations `modeldeploy.io/promote` / `modeldeploy.io/abort`, which the
operator acts on and removes; pause and resume flip `spec.paused`. The same contract is what
the Argo CD actions use, so every path behaves the same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modeldeploy import GROUP, PLURAL, VERSION, exitcodes
from modeldeploy.exitcodes import CLIError

# (connect, read) seconds for every API call the CLI makes.
REQUEST_TIMEOUT = (5.0, 30.0)
# A watch is re-opened this often (server-side timeout) while no --timeout is given.
WATCH_CHUNK_SECONDS = 300
# Phases that end `status --watch` (once the operator has acted on the current spec).
FINAL_PHASES = ("Healthy", "RolledBack", "Failed", "Degraded")
IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _cmd_operator(args: argparse.Namespace) -> int:
    import kopf

    import modeldeploy.handlers  # noqa: F401  (registers the handlers)
    from modeldeploy.config import Settings
    from modeldeploy.controller.leader import LeaseConfig

    if args.namespace:
        os.environ["MODELDEPLOY_NAMESPACES"] = ",".join(args.namespace)
    if args.http_address:
        os.environ["MODELDEPLOY_HTTP_ADDRESS"] = args.http_address
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # read by kopf's login and by Settings.kubeconfig
    if args.context:
        os.environ["MODELDEPLOY_KUBE_CONTEXT"] = args.context  # read by Settings.kube_context (handlers.login)
    try:
        settings = Settings()
        if settings.leader_election:
            LeaseConfig.from_settings(settings)  # fail now, with the reason, rather than inside kopf's retries
    except ValueError as e:
        raise CLIError(str(e), exitcodes.USAGE) from None
    if settings.kube_context:  # a context that is not in the kubeconfig fails now, not in kopf's login retries
        from modeldeploy.k8s import load_configuration

        with kubeconfig_errors(settings.kube_context):
            load_configuration(settings.kubeconfig, settings.kube_context)
    namespaces = list(settings.namespaces)
    # Our own identity, always: kopf's default asks the user database for the uid's name, and the
    # image's numeric non-root user (65532) has no entry there (getpwuid raises, the pod crash-loops).
    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}-{os.getpid()}"
    # Standalone on every replica: leader election is the controller's own Lease (controller/leader.py).
    kwargs: dict[str, Any] = {"standalone": True, "clusterwide": not namespaces, "namespaces": namespaces,
                              "identity": identity}  # (kopf types identity as its internal NewType)
    asyncio.run(kopf.operator(**kwargs))
    return 0


# --- talking to the cluster --------------------------------------------------------------------


@dataclass
class Conn:
    api: Any  # kubernetes.client.CustomObjectsApi
    namespace: str
    host: str


def connect(args: argparse.Namespace) -> Conn:
    """A client for the kubeconfig/context the flags (or kubectl's defaults) name, without retries."""
    from kubernetes import client

    from modeldeploy.k8s import load_api_client

    with kubeconfig_errors(args.context):
        api_client = load_api_client(args.kubeconfig, pool_size=2, context=args.context, retries=False)
    return Conn(client.CustomObjectsApi(api_client), namespace_of(args), str(api_client.configuration.host))


@contextlib.contextmanager
def kubeconfig_errors(context: str | None) -> Iterator[None]:
    """Turn a kubeconfig that cannot be loaded (no file, no such context) into a one-line CLIError."""
    from kubernetes import config

    try:
        yield
    except (config.ConfigException, OSError) as e:
        if context and f"name {context} " in str(e):
            raise CLIError(f'context "{context}" not found in the kubeconfig (list them with: kubectl config '
                           "get-contexts)") from None
        raise CLIError(f"no cluster to talk to ({e}): pass --kubeconfig or set KUBECONFIG, e.g. export "
                       "KUBECONFIG=$(pwd)/.local/cluster/kubeconfig after `make cluster-up`") from None


def namespace_of(args: argparse.Namespace) -> str:
    """-n, else the namespace of the context in use (kubectl's rule), else the pod's own, else default."""
    if args.namespace:
        return str(args.namespace)
    try:
        from modeldeploy.k8s import context_namespace

        return context_namespace(args.kubeconfig, args.context) or "default"
    except Exception:
        with contextlib.suppress(OSError):
            return open(IN_CLUSTER_NAMESPACE).read().strip() or "default"
        return "default"


def _api_message(e: Any) -> str:
    try:
        return str(json.loads(e.body).get("message") or e.reason)
    except (TypeError, ValueError, AttributeError):
        return str(e.reason)


def api_error(e: Any, conn: Conn, name: str) -> CLIError:
    """One line for an API answer that is not 2xx."""
    msg = _api_message(e)
    if e.status == 404 and "could not find the requested resource" in msg:
        return CLIError(f"the ModelDeployment API ({GROUP}/{VERSION}) is not installed in the cluster at {conn.host}: "
                        "apply the CRD first (kubectl apply -f crds/)")
    if e.status == 404:
        return CLIError(f'modeldeployment "{name}" not found in namespace "{conn.namespace}" '
                        "(list them with: kubectl get mdep -A)")
    if e.status == 401:
        return CLIError(f"the API server at {conn.host} rejected the credentials (401 Unauthorized): "
                        "check --kubeconfig / --context")
    if e.status == 403:
        return CLIError(f"forbidden: {msg}")
    return CLIError(f"the API server answered {e.status} {e.reason}: {msg}")


def network_error(e: BaseException, conn: Conn) -> CLIError:
    """One line for an API server that cannot be reached (refused, timed out, TLS, DNS)."""
    text = str(e)
    if "refused" in text.lower():
        why = "connection refused"
    elif "timed out" in text.lower() or "timeout" in type(e).__name__.lower():
        why = f"no answer within {REQUEST_TIMEOUT[0]:g}s" if "connect" in text.lower() else "timed out"
    elif "ssl" in type(e).__name__.lower() or "certificate" in text.lower():
        why = f"TLS error ({text.rsplit(': ', 1)[-1].strip(')')})"
    else:
        why = text.rsplit(": ", 1)[-1].strip(")'\"") or type(e).__name__
    return CLIError(f"cannot reach the API server at {conn.host}: {why} (is the cluster running? "
                    "check --kubeconfig / --context)")


@contextlib.contextmanager
def api_errors(conn: Conn, name: str) -> Iterator[None]:
    """Turn API and network exceptions into one-line CLIErrors."""
    import urllib3
    from kubernetes.client.rest import ApiException

    try:
        yield
    except ApiException as e:
        raise api_error(e, conn, name) from None
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise network_error(e, conn) from None


def get(conn: Conn, name: str) -> dict[str, Any]:
    with api_errors(conn, name):
        obj: dict[str, Any] = conn.api.get_namespaced_custom_object(GROUP, VERSION, conn.namespace, PLURAL, name,
                                                                    _request_timeout=REQUEST_TIMEOUT)
    return obj


def patch(conn: Conn, name: str, body: dict[str, Any]) -> dict[str, Any]:
    with api_errors(conn, name):
        obj: dict[str, Any] = conn.api.patch_namespaced_custom_object(GROUP, VERSION, conn.namespace, PLURAL, name,
                                                                      body, _request_timeout=REQUEST_TIMEOUT)
    return obj


# --- rendering -------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _bar(weight: int, width: int = 10) -> str:
    filled = max(0, min(width, round(weight * width / 100)))
    return "#" * filled + "." * (width - filled)


def render_timeline(steps: list[int], timeline: list[dict[str, Any]]) -> list[str]:
    """status.timeline as rows: time, step and its target, the achieved traffic as a bar, the verdict."""
    lines = [f"    {'TIME':<21}{'STEP':<7}{'TARGET':>6}  {'TRAFFIC':<15}VERDICT"]
    for e in timeline:
        step = int(e.get("step", 0))
        target = f"{steps[step - 1]}%" if 0 < step <= len(steps) else "-"
        weight = int(e.get("weight", 0))
        lines.append(f"    {e.get('time', ''):<21}{f'{step}/{len(steps)}':<7}{target:>6}  "
                     f"{_bar(weight)} {f'{weight}%':<4}{e.get('verdict', '')}")
    return lines


def _card_rows(card: dict[str, Any], wide: bool = False) -> dict[str, str]:
    """A status card (ModelCard, camelCase) as FIELD -> text, in the order `modeldeploy status` shows them
    (the data hash to its first 12 hex digits unless `wide`)."""
    data_hash = _fmt(card.get("dataHash"))
    if not wide and len(data_hash) > 19:
        data_hash = data_hash[:19] + "..."
    rows = {"name": _fmt(card.get("name")), "version": _fmt(card.get("version")), "kind": _fmt(card.get("kind")),
            "runtime": _fmt(card.get("runtime")), "dataset": _fmt(card.get("dataset")),
            "data hash": data_hash, "R² (test)": _fmt(card.get("r2")),
            "RMSE (test)": _fmt(card.get("rmse"))}
    gate = card.get("gate")
    rows["gate"] = "-" if not isinstance(gate, dict) else "passed" if gate.get("passed") else "FAILED"
    for c in (gate or {}).get("checks") or []:
        verdict = "ok" if c.get("passed") else "FAILED"
        rows[f"  {c.get('metric')} {c.get('op')} {_fmt(c.get('threshold'))}"] = f"{_fmt(c.get('value'))} {verdict}"
    parity = card.get("parity")
    rows["parity"] = (f"{parity.get('runtime')} max|diff| {_fmt(parity.get('maxAbsDiff'))} "
                      f"{'passed' if parity.get('passed') else 'FAILED'}") if isinstance(parity, dict) \
        else "- (native model)"
    return rows


def render_cards(stable: dict[str, Any] | None, canary: dict[str, Any] | None, wide: bool = False) -> list[str]:
    """The model cards as a table: FIELD | STABLE, and | CANARY beside it while a canary runs (`canary`
    not None; {} when its card is not read yet)."""
    columns = [_card_rows(stable, wide) if stable else {}]
    if canary is not None:
        columns.append(_card_rows(canary, wide) if canary else {})
    fields = list(dict.fromkeys(f for col in columns for f in col))
    header = ["FIELD", "STABLE"] + (["CANARY"] if canary is not None else [])
    table = [header] + [[f] + [col.get(f, "-") for col in columns] for f in fields]
    widths = [max(len(row[i]) for row in table) + 2 for i in range(len(header) - 1)]
    return ["    " + "".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + row[-1] for row in table]


def render_status(obj: dict[str, Any], wide: bool = False) -> str:
    """A readable, stable text view of one ModelDeployment's rollout (used by `modeldeploy status`).

    `wide` shows every analysis, history entry and condition instead of the latest few."""
    spec, st = obj.get("spec", {}), obj.get("status", {}) or {}
    meta = obj["metadata"]
    steps = spec.get("rollout", {}).get("canary", {}).get("steps", [])
    lines = [
        f"ModelDeployment {meta.get('namespace', 'default')}/{meta['name']}",
        f"  Phase:     {st.get('phase', 'Pending')}" + (" (paused)" if spec.get("paused") else ""),
        f"  Message:   {st.get('message', '')}",
        f"  Strategy:  {spec.get('rollout', {}).get('strategy', 'Canary')}  steps {steps}  "
        f"interval {spec.get('rollout', {}).get('canary', {}).get('interval', '30s')}",
    ]
    stable, canary = st.get("stable") or {}, st.get("canary") or {}
    lines.append(f"  Stable:    {stable.get('bento') or stable.get('image', '-')}  ({stable.get('hash', '-')})  "
                 f"ready {st.get('readyReplicas', 0)}/{st.get('replicas', 0)}")
    if canary:
        step = st.get("currentStep", 0)
        target = steps[step - 1] if 0 < step <= len(steps) else 0
        lines.append(f"  Canary:    {canary.get('bento') or canary.get('image')}  ({canary.get('hash')})  "
                     f"step {step}/{len(steps)}  target {target}%")
    weight = int(st.get("canaryWeight", 0))
    lines.append(f"  Traffic:   stable {100 - weight}%  canary {weight}%")
    stable_card, canary_card = stable.get("card"), canary.get("card")
    if stable_card or canary_card:
        lines.append("  Model card:")
        lines.extend(render_cards(stable_card, (canary_card or {}) if canary else None, wide))
    elif stable or canary:
        lines.append("  Model card: - (read from a ready pod's /metadata once one serves)")
    lines.append(f"  Checks:    failed {st.get('failedChecks', 0)}  inconclusive {st.get('inconclusiveChecks', 0)}  "
                 f"provider errors {st.get('providerErrors', 0)}")
    timeline = st.get("timeline") or []
    if timeline:
        lines.append("  Timeline:")
        lines.extend(render_timeline(steps, timeline if wide else timeline[-12:]))
    analyses = st.get("lastAnalysis") or []
    if analyses:
        lines.append("  Last analyses:")
        # STABLE: the stable's value over the same window (baseline checks); CONF: the confidence the verdict reached.
        lines.append(f"    {'TIME':<21}{'METRIC':<23}{'VALUE':>10}{'STABLE':>10}{'MIN':>8}{'MAX':>8}{'CONF':>8}  "
                     f"{'VERDICT':<13}MESSAGE")
        for a in analyses if wide else analyses[:10]:
            lines.append(f"    {a.get('time', ''):<21}{a.get('metric', ''):<23}{_fmt(a.get('value')):>10}"
                         f"{_fmt(a.get('baseline')):>10}{_fmt(a.get('min')):>8}{_fmt(a.get('max')):>8}"
                         f"{_fmt(a.get('confidence')):>8}  {a.get('verdict', ''):<13}{a.get('message', '')}")
    history = st.get("history") or []
    if history:
        lines.append("  History:")
        for h in history if wide else history[:5]:
            rev = h.get("revision", {})
            lines.append(f"    {h.get('time', ''):<21}{rev.get('bento') or rev.get('image', ''):<28}"
                         f"{h.get('result', ''):<12}{h.get('reason', '')}")
    conditions = st.get("conditions") or []
    if wide and conditions:
        lines.append("  Conditions:")
        lines.append(f"    {'TYPE':<13}{'STATUS':<8}{'REASON':<24}MESSAGE")
        for c in conditions:
            lines.append(f"    {c.get('type', ''):<13}{c.get('status', ''):<8}{c.get('reason', ''):<24}"
                         f"{c.get('message', '')}")
    for c in conditions:  # the conditions that need the reader's attention, also without -o wide
        if not wide and c.get("type") in ("Degraded", "StepsApproximate") and c.get("status") == "True":
            lines.append(f"  {c['type']}:  {c.get('reason')}: {c.get('message')}")
    return "\n".join(lines)


def render(obj: dict[str, Any], output: str | None) -> str:
    """The object in the format `-o` asks for (kubectl's json and yaml; wide and the default are text)."""
    if output == "json":
        return json.dumps(obj, indent=2)
    if output == "yaml":
        import yaml

        return str(yaml.safe_dump(obj, sort_keys=False)).rstrip("\n")
    return render_status(obj, wide=output == "wide")


def phase_of(obj: dict[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase") or "Pending")


# --- commands --------------------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    if args.timeout is not None and not args.watch:
        raise CLIError("--timeout applies to --watch: add --watch", exitcodes.USAGE)
    conn = connect(args)
    obj = get(conn, args.name)
    if args.watch:
        return watch(conn, obj, args.timeout)
    print(render(obj, args.output))
    return exitcodes.for_phase(phase_of(obj))


def _summary(obj: dict[str, Any]) -> tuple[Any, ...]:
    """What a watch line is printed for: phase, canary, step, weight and the latest verdict."""
    st = obj.get("status") or {}
    timeline = st.get("timeline") or []
    verdict = timeline[-1].get("verdict") if timeline else None
    return (phase_of(obj), (st.get("canary") or {}).get("hash"), st.get("currentStep", 0), st.get("canaryWeight", 0),
            verdict, len(timeline))


def watch_line(obj: dict[str, Any]) -> str:
    st = obj.get("status") or {}
    steps = obj.get("spec", {}).get("rollout", {}).get("canary", {}).get("steps", [])
    timeline = st.get("timeline") or []
    step = int(st.get("currentStep", 0))
    parts = [datetime.now(UTC).strftime("%H:%M:%S"), f"{phase_of(obj):<12}"]
    parts.append(f"step {step}/{len(steps)}" if step else "no canary")
    parts.append(f"canary {int(st.get('canaryWeight', 0))}%")
    if timeline:
        parts.append(f"last {timeline[-1].get('verdict')}")
    parts.append(str(st.get("message", "")))
    return "  ".join(parts)


def finished(obj: dict[str, Any]) -> bool:
    """The rollout has ended: a final phase, computed for the current spec (not the one before it)."""
    st = obj.get("status") or {}
    current = int(st.get("observedGeneration") or 0) >= int(obj["metadata"].get("generation") or 0)
    return current and phase_of(obj) in FINAL_PHASES


def watch(conn: Conn, obj: dict[str, Any], timeout: float | None,
          line: Callable[[dict[str, Any]], str] = watch_line) -> int:
    """Print a line per change until the rollout ends (its phase's exit code) or `timeout` (exit 7).

    A watch on the one object (fieldSelector on its name), resumed from the last resourceVersion
    when the server closes it; re-read after 410 Gone. `line` renders a change (`modeldeploy
    release` prints its own stage-prefixed lines)."""
    from kubernetes import watch as kwatch
    from kubernetes.client.rest import ApiException

    name = obj["metadata"]["name"]
    deadline = time.monotonic() + timeout if timeout else None
    last: tuple[Any, ...] | None = None

    def show(o: dict[str, Any]) -> None:
        nonlocal last
        if _summary(o) != last:
            print(line(o), flush=True)
            last = _summary(o)

    show(obj)
    while not finished(obj):
        remaining = deadline - time.monotonic() if deadline is not None else WATCH_CHUNK_SECONDS
        if remaining <= 0:
            raise CLIError(f"timed out after {timeout:g}s: {conn.namespace}/{name} is still {phase_of(obj)}",
                           exitcodes.WATCH_TIMEOUT)
        stream = kwatch.Watch().stream(
            conn.api.list_namespaced_custom_object, GROUP, VERSION, conn.namespace, PLURAL,
            field_selector=f"metadata.name={name}", resource_version=obj["metadata"]["resourceVersion"],
            timeout_seconds=max(1, math.ceil(remaining)), _request_timeout=(REQUEST_TIMEOUT[0], remaining + 10))
        expired = False
        with api_errors(conn, name):
            try:
                for event in stream:
                    if event["type"] == "DELETED":
                        raise CLIError(f"{conn.namespace}/{name} was deleted")
                    obj = event["object"]
                    show(obj)
                    if finished(obj):
                        break
            except ApiException as e:
                if e.status != 410:
                    raise
                expired = True
        if expired:  # our resourceVersion is too old: start again from the current object
            obj = get(conn, name)
            show(obj)
    return exitcodes.for_phase(phase_of(obj))


def _annotate(args: argparse.Namespace, key: str, verb: str) -> int:
    conn = connect(args)
    obj = get(conn, args.name)
    if not (obj.get("status") or {}).get("canary"):
        raise CLIError(f"{conn.namespace}/{args.name} has no canary in progress to {verb} "
                       f"(phase {phase_of(obj)}); see: modeldeploy status {args.name}")
    # The value binds the request to this canary: if another revision is running by the time the
    # operator sees it, the request is ignored (with an Event) instead of acting on the wrong canary.
    revision = str(obj["status"]["canary"].get("hash") or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    out = patch(conn, args.name, {"metadata": {"annotations": {key: revision}}})
    _report(out, args.output, f"{conn.namespace}/{args.name}: {verb} requested for canary {revision} (annotation "
                              f"{key}); the operator acts on its next reconcile")
    return 0


def _set_paused(args: argparse.Namespace, paused: bool) -> int:
    conn = connect(args)
    out = patch(conn, args.name, {"spec": {"paused": paused}})
    _report(out, args.output, f"{conn.namespace}/{args.name}: {'paused' if paused else 'resumed'}")
    return 0


def _report(obj: dict[str, Any], output: str | None, sentence: str) -> None:
    print(render(obj, output) if output else sentence)


# --- arguments -------------------------------------------------------------------------------


def add_kube_flags(p: argparse.ArgumentParser, namespace: bool = True) -> None:
    """kubectl's connection flags, with kubectl's defaults."""
    if namespace:
        p.add_argument("-n", "--namespace", default="",
                       help="namespace of the object (default: the kubeconfig context's, else default)")
    p.add_argument("--kubeconfig", default=None,
                   help="kubeconfig file to use (default: $KUBECONFIG, else ~/.kube/config; in a pod: its service "
                        "account)")
    p.add_argument("--context", default=None, help="kubeconfig context to use (default: its current-context)")


def duration(text: str) -> float:
    """--timeout: seconds (90) or a duration (30s, 5m, 1h30m); > 0."""
    from modeldeploy.api import parse_duration

    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parse_duration(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a duration: give seconds or e.g. 30s, 5m, 1h30m") \
                from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be greater than zero")
    return seconds


def register(sub: Any) -> None:
    p = sub.add_parser("operator", help="run the operator (in-cluster config, else the kubeconfig)")
    p.add_argument("--namespace", "-n", action="append", default=[],
                   help="watch only this namespace (repeatable); default: cluster-wide")
    p.add_argument("--http-address", default="",
                   help="host:port for /metrics, /healthz, /readyz (default 127.0.0.1:8080)")
    p.add_argument("--kubeconfig", default=None,
                   help="kubeconfig file to use out of a cluster (default: $KUBECONFIG, else ~/.kube/config)")
    p.add_argument("--context", default=None,
                   help="kubeconfig context to use (default: its current-context), for kopf's connection and the "
                        "operator's own client")
    p.set_defaults(func=_cmd_operator)

    def target(name: str, help_: str, outputs: tuple[str, ...] = ("json", "yaml")) -> argparse.ArgumentParser:
        q: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
        q.add_argument("name", help="ModelDeployment name")
        add_kube_flags(q)
        q.add_argument("-o", "--output", choices=outputs, default=None,
                       help=f"output format: {'|'.join(outputs)} (default: readable text)")
        return q

    q = target("status", "show a rollout: phase, step, weights, timeline, last analyses, history; exit code "
                         "4 RolledBack, 5 Degraded, 6 Failed", ("json", "yaml", "wide"))
    q.add_argument("-w", "--watch", action="store_true",
                   help="follow the rollout: a line per change of phase, step, weight or verdict; exits with the "
                        "final phase's code when it ends (Healthy, RolledBack, Failed, Degraded)")
    q.add_argument("--timeout", type=duration, default=None,
                   help="with --watch: give up after this long (seconds or 30s, 5m, ...), exit code 7")
    q.set_defaults(func=_cmd_status)
    target("promote", "promote the running canary now").set_defaults(
        func=lambda a: _annotate(a, "modeldeploy.io/promote", "promote"))
    target("abort", "roll the running canary back now").set_defaults(
        func=lambda a: _annotate(a, "modeldeploy.io/abort", "abort"))
    target("pause", "hold the rollout where it is (spec.paused=true)").set_defaults(
        func=lambda a: _set_paused(a, True))
    target("resume", "continue a paused rollout (spec.paused=false)").set_defaults(
        func=lambda a: _set_paused(a, False))
