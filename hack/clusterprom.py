"""Prometheus inside a cluster (kind): our Prometheus binary as an image, the shipped scrape config.

Why: on kind the operator's pod must reach Prometheus, and Prometheus must reach the model pods,
so it runs where users run it — in the cluster, discovering pods through the API server with
its own ServiceAccount — using manifests/monitoring/prometheus-scrape-config.yaml as shipped
(only the scrape interval is shortened, as the real-node tier does). The image is the
Prometheus hack/build-binaries.sh builds with Kubernetes service discovery (Debian's lacks it),
``FROM scratch``, cached by the binary under ~/.cache/modeldeploy/images.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from images import IMAGES, _digest
from kindnode import _file_digest, dir_archive

REPO = Path(__file__).resolve().parent.parent
SCRAPE_CONFIG = REPO / "manifests" / "monitoring" / "prometheus-scrape-config.yaml"
NAMESPACE = "monitoring"
NAME = "prometheus"
URL = f"http://{NAME}.{NAMESPACE}.svc:9090"  # what the operator's pod uses


def image(prometheus: Path) -> tuple[str, Path]:
    """(name, docker-archive) of an image holding only the ``prometheus`` binary."""
    real = prometheus.resolve()
    key = _digest([_file_digest(real), "clusterprom 1"])[:12]
    name = f"localhost/modeldeploy/prometheus:{real.name.removeprefix('prometheus-')}-{key}"
    archive = IMAGES / f"prometheus-{key}.tar"
    if not archive.exists():
        IMAGES.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="prom-image-") as tmp:
            tree = Path(tmp) / "tree"
            (tree / "bin").mkdir(parents=True)
            (tree / "bin" / "prometheus").write_bytes(real.read_bytes())
            (tree / "bin" / "prometheus").chmod(0o755)
            (tree / "prometheus").mkdir()
            dir_archive(archive, name, tree, {"Entrypoint": ["/bin/prometheus"], "User": "65534:65534",
                                              "ExposedPorts": {"9090/tcp": {}}})
    return name, archive


def config(scrape_interval: str = "2s") -> str:
    jobs: list[dict[str, Any]] = yaml.safe_load(SCRAPE_CONFIG.read_text())["scrape_configs"]
    for job in jobs:
        job["scrape_interval"] = job["scrape_timeout"] = scrape_interval
    return json.dumps({"global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
                       "scrape_configs": jobs}, indent=2)


def manifests(image_name: str, scrape_interval: str = "2s") -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": NAME}
    meta = {"name": NAME, "namespace": NAMESPACE, "labels": labels}
    restricted = {"pod-security.kubernetes.io/enforce": "restricted"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": restricted}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "modeldeploy-prometheus"},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "modeldeploy-prometheus"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "modeldeploy-prometheus"},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
         "data": {"prometheus.yml": config(scrape_interval)}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
            "replicas": 1, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
                "serviceAccountName": NAME,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "fsGroup": 65534,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": NAME, "image": image_name, "imagePullPolicy": "Never",
                    "args": ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                             "--storage.tsdb.retention.time=1h", "--web.listen-address=:9090", "--log.level=warn"],
                    "ports": [{"name": "http", "containerPort": 9090}],
                    "readinessProbe": {"httpGet": {"path": "/-/ready", "port": 9090}, "periodSeconds": 2},
                    "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
                    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/prometheus"},
                                     {"name": "data", "mountPath": "/prometheus"}]}],
                "volumes": [{"name": "config", "configMap": {"name": NAME}}, {"name": "data", "emptyDir": {}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"selector": labels, "ports": [{"name": "http", "port": 9090, "targetPort": 9090}]}},
    ]
