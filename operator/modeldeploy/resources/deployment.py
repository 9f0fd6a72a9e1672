"""The model server Deployment (one per track), following BentoML's container conventions.

What a `bentoml containerize` image needs to start on a real kubelet, under Pod Security
"restricted" with a read-only root filesystem (measured on a real node; see the README):

- **Numeric user.** BentoML's Dockerfile ends with `USER bentoml` (a name; uid/gid 1034). With
  `runAsNonRoot` the kubelet refuses a named user it cannot check, so the pod sets numeric
  `runAsUser`/`runAsGroup`/`fsGroup` (1034, or `spec.model.runAsUser`/`runAsGroup`).
- **Writable BentoML home.** The image sets `BENTOML_HOME=/home/bentoml/`, and BentoML creates
  `bentos`, `models`, `envs`, `tmp` and `prometheus_multiproc_dir` there at start-up. The Bento
  itself is `/home/bentoml/bento`, so no volume can be mounted at `/home/bentoml`: BENTOML_HOME
  points at its own emptyDir instead. `/tmp` is an emptyDir too (BentoML's sockets),
  `PYTHONDONTWRITEBYTECODE=1` (no bytecode next to read-only sources) and `HOME=/tmp` (libraries
  such as onnxruntime write under `$HOME/.cache`). A user's env of the same name wins.
- **The port.** The entrypoint runs `bentoml serve`, whose `--port` option reads `BENTOML_PORT`
  (and the entrypoint copies `PORT` over it). The operator sets BENTOML_PORT from
  `spec.model.port`, so probes, Service and server agree; the CRD rejects a user's BENTOML_PORT or
  PORT. BENTOML_HOST is left alone: BentoML binds 0.0.0.0 by default.
- **Probes for a one-worker server under load:** generous timeouts, a liveness check that a busy
  server survives, and a startup budget for slow model loads.
- **Graceful shutdown:** a preStop `sleep` (no binary needed in the image) holds SIGTERM until
  kube-proxy and the routers have stopped sending traffic, so scale-down, promotion and rollback
  drop no request; the grace period leaves BentoML time to finish what is in flight.
"""

from __future__ import annotations

from typing import Any

from modeldeploy.api import RESERVED_ENV_NAMES, ModelDeployment, ModelSpec
from modeldeploy.resources.common import (
    ANNOTATION_BENTO,
    LABEL_REVISION,
    Track,
    common_labels,
    deployment_name,
    label_value,
    metadata,
    revision_hash,
    selector_labels,
)

# uid and gid of the `bentoml` user in BentoML's generated Dockerfile (`bento__uid_gid`).
BENTOML_UID = 1034
# BENTOML_HOME on a per-pod emptyDir; anywhere but /home/bentoml (the Bento lives below it).
BENTOML_HOME = "/var/lib/bentoml"
# Long enough for kube-proxy (and Gateway/Istio data planes) to drop the endpoint after the pod
# is marked terminating; SIGTERM only comes after it.
PRESTOP_SLEEP_SECONDS = 5
# The preStop sleep counts against this; the rest is for in-flight requests to finish.
TERMINATION_GRACE_PERIOD_SECONDS = 30

# Defaults the user may override with spec.model.env.
DEFAULT_ENV: tuple[tuple[str, str], ...] = (
    ("BENTOML_HOME", BENTOML_HOME),
    ("HOME", "/tmp"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
)

# One worker may be busy for seconds under load: readiness takes it out of the Service quickly,
# liveness restarts it only after a minute without an answer, startup allows 5 minutes of model
# load. (path, periodSeconds, timeoutSeconds, failureThreshold)
STARTUP_PROBE = ("/livez", 5, 3, 60)
LIVENESS_PROBE = ("/livez", 10, 5, 6)
READINESS_PROBE = ("/readyz", 5, 3, 3)


def _probe(probe: tuple[str, int, int, int]) -> dict[str, Any]:
    path, period, timeout, failures = probe
    return {"httpGet": {"path": path, "port": "http"},
            "periodSeconds": period, "timeoutSeconds": timeout, "failureThreshold": failures}


def _env(model: ModelSpec, md: ModelDeployment, track: Track, revision: str) -> list[dict[str, Any]]:
    """Defaults first (so user values can refer to them as $(NAME)), then the user's env (the last
    of a repeated name wins, as in Kubernetes), then the operator's own: no name appears twice."""
    user: dict[str, dict[str, Any]] = {}
    for e in model.env:
        # The CRD rejects reserved names; objects stored before that rule still must not
        # override the port or the pod's identity.
        if e.name not in RESERVED_ENV_NAMES:
            user.pop(e.name, None)
            user[e.name] = e.model_dump(by_alias=True, exclude_none=True)
    env = [{"name": n, "value": v} for n, v in DEFAULT_ENV if n not in user]
    env += user.values()
    env += [
        {"name": "BENTOML_PORT", "value": str(model.port)},
        # Track and revision help logs and custom metrics tell pods apart.
        {"name": "MODELDEPLOY_NAME", "value": md.name},
        {"name": "MODELDEPLOY_TRACK", "value": track},
        {"name": "MODELDEPLOY_REVISION", "value": revision},
    ]
    return env


def pod_template(md: ModelDeployment, track: Track, model: ModelSpec) -> dict[str, Any]:
    revision = revision_hash(model)
    labels = {**common_labels(md, track), LABEL_REVISION: revision}
    if model.bento:
        labels["app.kubernetes.io/version"] = label_value(model.bento.split(":")[-1])
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(model.port),
        "prometheus.io/path": "/metrics",
    }
    if model.bento:
        annotations[ANNOTATION_BENTO] = model.bento
    uid = BENTOML_UID if model.run_as_user is None else model.run_as_user
    gid = BENTOML_UID if model.run_as_group is None else model.run_as_group
    container: dict[str, Any] = {
        "name": "model",
        "image": model.image,
        "imagePullPolicy": model.image_pull_policy,
        "ports": [{"name": "http", "containerPort": model.port, "protocol": "TCP"}],
        "env": _env(model, md, track, revision),
        "resources": model.resources.model_dump(by_alias=True, exclude_none=True),
        "startupProbe": _probe(STARTUP_PROBE),
        "livenessProbe": _probe(LIVENESS_PROBE),
        "readinessProbe": _probe(READINESS_PROBE),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                         {"name": "bentoml-home", "mountPath": BENTOML_HOME}],
    }
    if model.args:
        container["args"] = list(model.args)
    spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "fsGroup": gid,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_PERIOD_SECONDS,
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                    {"name": "bentoml-home", "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    if model.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in model.image_pull_secrets]
    if model.service_account_name:
        spec["serviceAccountName"] = model.service_account_name
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec}


def build_deployment(md: ModelDeployment, track: Track = "stable", model: ModelSpec | None = None,
                     replicas: int | None = None) -> dict[str, Any]:
    """The Deployment for `track` running `model` (default: the spec's model).

    `replicas=None` leaves the field out, so an HPA (or a later writer) owns it: the operator
    never fights the autoscaler.
    """
    model = model or md.spec.model
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(md, track)},
        "template": pod_template(md, track, model),
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "progressDeadlineSeconds": md.spec.progress_deadline_seconds,
        "revisionHistoryLimit": 3,
    }
    if md.spec.paused and md.spec.rollout.strategy == "Rolling":
        spec["paused"] = True
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(md, deployment_name(md, track), track),
        "spec": spec,
    }
