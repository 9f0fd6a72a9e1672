"""Operator-side CLI: run the operator, and inspect and steer rollouts.

    modeldeploy operator [-n NS ...]          run the operator (in-cluster config or KUBECONFIG)
    modeldeploy status NAME [-n NS]           phase, step, weights, last analyses, history
    modeldeploy promote|abort NAME [-n NS]    promote the canary now / roll it back now
    modeldeploy pause|resume NAME [-n NS]     hold / continue the rollout (spec.paused)

promote and abort set the annotations `modeldeploy.io/promote` / `modeldeploy.io/abort`, which the
operator acts on and removes; pause and resume flip `spec.paused`. The same contract is what
the Argo CD actions use, so every path behaves the same.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from datetime import UTC, datetime
from typing import Any

from modeldeploy import GROUP, PLURAL, VERSION


def _cmd_operator(args: argparse.Namespace) -> int:
    import kopf

    import modeldeploy.handlers  # noqa: F401  (registers the handlers)
    from modeldeploy.config import Settings
    from modeldeploy.controller.leader import LeaseConfig

    if args.namespace:
        os.environ["MODELDEPLOY_NAMESPACES"] = ",".join(args.namespace)
    if args.http_address:
        os.environ["MODELDEPLOY_HTTP_ADDRESS"] = args.http_address
    try:
        settings = Settings()
        if settings.leader_election:
            LeaseConfig.from_settings(settings)  # fail now, with the reason, rather than inside kopf's retries
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    namespaces = list(settings.namespaces)
    # Our own identity, always: kopf's default asks the user database for the uid's name, and the
    # image's numeric non-root user (65532) has no entry there (getpwuid raises, the pod crash-loops).
    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}-{os.getpid()}"
    # Standalone on every replica: leader election is the controller's own Lease (controller/leader.py).
    kwargs: dict[str, Any] = {"standalone": True, "clusterwide": not namespaces, "namespaces": namespaces,
                              "identity": identity}  # (kopf types identity as its internal NewType)
    asyncio.run(kopf.operator(**kwargs))
    return 0


class CLIError(Exception):
    pass


def _client() -> Any:
    from kubernetes import client, config

    from modeldeploy.k8s import load_api_client

    try:
        return client.CustomObjectsApi(load_api_client(os.environ.get("KUBECONFIG")))
    except (config.ConfigException, OSError) as e:
        raise CLIError(f"no cluster to talk to ({e}): set KUBECONFIG, e.g. export KUBECONFIG=$(pwd)/.local/cluster/"
                       "kubeconfig after `make cluster-up`") from e


def _namespace(args: argparse.Namespace) -> str:
    if args.namespace:
        return str(args.namespace)
    try:
        from kubernetes import config

        _, ctx = config.list_kube_config_contexts()
        return str(ctx.get("context", {}).get("namespace") or "default")
    except Exception:
        return "default"


def _get(args: argparse.Namespace) -> tuple[Any, str, dict[str, Any]] | None:
    from kubernetes.client.rest import ApiException

    try:
        api = _client()
    except CLIError as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    ns = _namespace(args)
    try:
        return api, ns, api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, args.name)
    except ApiException as e:
        if e.status == 404:
            print(f"error: ModelDeployment {args.name!r} not found in namespace {ns!r} "
                  f"(list them with: kubectl get mdep -A)", file=sys.stderr)
            return None
        print(f"error: cannot read ModelDeployment {ns}/{args.name}: {e.status} {e.reason}", file=sys.stderr)
        return None


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def render_status(obj: dict[str, Any]) -> str:
    """A readable, stable text view of one ModelDeployment's rollout (used by `modeldeploy status`)."""
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
    lines.append(f"  Checks:    failed {st.get('failedChecks', 0)}  inconclusive {st.get('inconclusiveChecks', 0)}  "
                 f"provider errors {st.get('providerErrors', 0)}")
    analyses = st.get("lastAnalysis") or []
    if analyses:
        lines.append("  Last analyses:")
        lines.append(f"    {'TIME':<21}{'METRIC':<16}{'VALUE':>10}{'MIN':>8}{'MAX':>8}  {'VERDICT':<13}MESSAGE")
        for a in analyses[:10]:
            lines.append(f"    {a.get('time', ''):<21}{a.get('metric', ''):<16}{_fmt(a.get('value')):>10}"
                         f"{_fmt(a.get('min')):>8}{_fmt(a.get('max')):>8}  {a.get('verdict', ''):<13}"
                         f"{a.get('message', '')}")
    history = st.get("history") or []
    if history:
        lines.append("  History:")
        for h in history[:5]:
            rev = h.get("revision", {})
            lines.append(f"    {h.get('time', ''):<21}{rev.get('bento') or rev.get('image', ''):<28}"
                         f"{h.get('result', ''):<12}{h.get('reason', '')}")
    for c in st.get("conditions") or []:
        if c.get("type") == "Degraded" and c.get("status") == "True":
            lines.append(f"  Degraded:  {c.get('reason')}: {c.get('message')}")
    return "\n".join(lines)


def _cmd_status(args: argparse.Namespace) -> int:
    got = _get(args)
    if got is None:
        return 1
    print(render_status(got[2]))
    return 0


def _annotate(args: argparse.Namespace, key: str, verb: str) -> int:
    got = _get(args)
    if got is None:
        return 1
    api, ns, obj = got
    if not (obj.get("status") or {}).get("canary"):
        print(f"error: {ns}/{args.name} has no canary in progress to {verb} "
              f"(phase {(obj.get('status') or {}).get('phase', 'Pending')}); see: modeldeploy status {args.name}",
              file=sys.stderr)
        return 1
    # The value binds the request to this canary: if another revision is running by the time the
    # operator sees it, the request is ignored (with an Event) instead of acting on the wrong canary.
    revision = str(obj["status"]["canary"].get("hash") or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, args.name,
                                       {"metadata": {"annotations": {key: revision}}})
    print(f"{ns}/{args.name}: {verb} requested for canary {revision} (annotation {key}); the operator acts on its "
          "next reconcile")
    return 0


def _set_paused(args: argparse.Namespace, paused: bool) -> int:
    got = _get(args)
    if got is None:
        return 1
    api, ns, _ = got
    api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, args.name, {"spec": {"paused": paused}})
    print(f"{ns}/{args.name}: {'paused' if paused else 'resumed'}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("operator", help="run the operator (uses in-cluster config or KUBECONFIG)")
    p.add_argument("--namespace", "-n", action="append", default=[],
                   help="watch only this namespace (repeatable); default: cluster-wide")
    p.add_argument("--http-address", default="",
                   help="host:port for /metrics, /healthz, /readyz (default 127.0.0.1:8080)")
    p.set_defaults(func=_cmd_operator)

    def target(name: str, help_: str) -> argparse.ArgumentParser:
        q: argparse.ArgumentParser = sub.add_parser(name, help=help_)
        q.add_argument("name", help="ModelDeployment name")
        q.add_argument("--namespace", "-n", default="", help="namespace (default: the kubeconfig context's)")
        return q

    target("status", "show a rollout: phase, step, weights, last analyses").set_defaults(func=_cmd_status)
    target("promote", "promote the running canary now").set_defaults(
        func=lambda a: _annotate(a, "modeldeploy.io/promote", "promote"))
    target("abort", "roll the running canary back now").set_defaults(
        func=lambda a: _annotate(a, "modeldeploy.io/abort", "abort"))
    target("pause", "hold the rollout where it is (spec.paused=true)").set_defaults(
        func=lambda a: _set_paused(a, True))
    target("resume", "continue a paused rollout (spec.paused=false)").set_defaults(
        func=lambda a: _set_paused(a, False))
