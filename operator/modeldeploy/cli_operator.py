"""Operator-side CLI: `modeldeploy operator` runs the operator; more rollout commands join here."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any


def _cmd_operator(args: argparse.Namespace) -> int:
    import kopf

    import modeldeploy.handlers  # noqa: F401  (registers the handlers)

    if args.namespace:
        os.environ["MODELDEPLOY_NAMESPACES"] = ",".join(args.namespace)
    if args.http_address:
        os.environ["MODELDEPLOY_HTTP_ADDRESS"] = args.http_address
    namespaces = args.namespace or [n for n in os.environ.get("MODELDEPLOY_NAMESPACES", "").split(",") if n]
    peering = os.environ.get("MODELDEPLOY_PEERING", "")
    kwargs: dict[str, Any] = {"standalone": not peering, "clusterwide": not namespaces,
                              "namespaces": namespaces}
    if peering:
        kwargs["peering_name"] = peering
    asyncio.run(kopf.operator(**kwargs))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("operator", help="run the operator (uses in-cluster config or KUBECONFIG)")
    p.add_argument("--namespace", "-n", action="append", default=[],
                   help="watch only this namespace (repeatable); default: cluster-wide")
    p.add_argument("--http-address", default="",
                   help="host:port for /metrics, /healthz, /readyz (default 127.0.0.1:8080)")
    p.set_defaults(func=_cmd_operator)
