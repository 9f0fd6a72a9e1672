"""Shared builders for unit tests: a ModelDeployment from a minimal dict, and schema validation."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate

from modeldeploy.api import ModelDeployment

K8S_VERSION = "1.34.0"

BASE: dict[str, Any] = {
    "apiVersion": "modeldeploy.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "room-price", "namespace": "ml", "uid": "0c1e7d4e-0000-4000-8000-000000000001",
                 "generation": 1},
    "spec": {"model": {"image": "registry.example/room-price:2f1c", "bento": "room_price:2f1c"}},
}


def md(**spec: Any) -> ModelDeployment:
    body = copy.deepcopy(BASE)
    body["spec"].update(spec)
    return ModelDeployment.model_validate(body)


def validate(obj: dict[str, Any]) -> None:
    """Raise if `obj` is not a valid object of its kind for Kubernetes 1.34 (strict: no unknown fields)."""
    kubernetes_validate.validate(obj, desired_version=K8S_VERSION, strict=True)


# Pod Security Standards, "restricted" profile (latest, as of Kubernetes 1.34), as a pure check of a
# pod spec: https://kubernetes.io/docs/concepts/security/pod-security-standards/
_RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                       "projected", "secret"}
_SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
_SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                 "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                 "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                 "net.ipv4.tcp_keepalive_probes"}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Why `pod` (a PodSpec) would be refused in a namespace enforcing "restricted"; [] if admitted."""
    out: list[str] = []
    psc = pod.get("securityContext", {})
    out += [f"{f} is set" for f in ("hostNetwork", "hostPID", "hostIPC") if pod.get(f)]
    for vol in pod.get("volumes", []):
        kinds = set(vol) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            out.append(f"volume {vol['name']} has type {sorted(kinds)}")
    out += [f"sysctl {s['name']} is not safe" for s in psc.get("sysctls", []) if s["name"] not in _SAFE_SYSCTLS]
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser is 0")
    if psc.get("seLinuxOptions", {}).get("type") not in _SELINUX_TYPES:
        out.append("pod seLinuxOptions.type is not allowed")
    if psc.get("appArmorProfile", {}).get("type") == "Unconfined":
        out.append("pod AppArmor profile is Unconfined")
    containers = pod.get("containers", []) + pod.get("initContainers", []) + pod.get("ephemeralContainers", [])
    for c in containers:
        name, sc = c["name"], c.get("securityContext", {})
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            out.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: adds capabilities {caps['add']}")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            out.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            out.append(f"{name}: runAsUser is 0")
        if sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type") not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile is not RuntimeDefault or Localhost")
        if sc.get("seLinuxOptions", {}).get("type") not in _SELINUX_TYPES:
            out.append(f"{name}: seLinuxOptions.type is not allowed")
        if sc.get("appArmorProfile", {}).get("type") == "Unconfined":
            out.append(f"{name}: AppArmor profile is Unconfined")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{name}: procMount is not Default")
        if sc.get("windowsOptions", {}).get("hostProcess"):
            out.append(f"{name}: Windows hostProcess")
        out += [f"{name}: hostPort {p['hostPort']}" for p in c.get("ports", []) if p.get("hostPort")]
    return out


def effective_user(pod: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(runAsUser, runAsGroup) each container really runs with; None where the image decides."""
    psc = pod.get("securityContext", {})
    return [(c.get("securityContext", {}).get("runAsUser", psc.get("runAsUser")),
             c.get("securityContext", {}).get("runAsGroup", psc.get("runAsGroup"))) for c in pod["containers"]]
