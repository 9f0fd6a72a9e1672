"""Shared builders for unit tests: a ModelDeployment from a minimal dict, schema validation, and `World`,
an in-memory cluster that carries out `reconcile.plan`'s actions (the rollout tests and the model-based
test of the engine drive the same one)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes_validate

from modeldeploy.api import STORED, ModelDeployment
from modeldeploy.reconcile import Action, Observed, Plan, plan
from modeldeploy.rollout.analysis import AnalysisResult

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


def stored_md(**spec: Any) -> ModelDeployment:
    """Like md, for an object stored before the API's rules refused it (checked by the schema alone): what
    the builders must still handle safely, e.g. as a status.stableModel."""
    body = copy.deepcopy(BASE)
    body["spec"].update(spec)
    return ModelDeployment.model_validate(body, context=STORED)


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


T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
PROM = {"address": "http://prometheus:9090"}
CANARY = {"steps": [10, 50], "interval": "10s"}
V1 = {"image": "registry.example/m:v1", "bento": "m:v1"}
V2 = {"image": "registry.example/m:v2", "bento": "m:v2"}
V3 = {"image": "registry.example/m:v3", "bento": "m:v3"}


class World:
    """An in-memory cluster: the ModelDeployment, its children, and a clock.

    `step` is one reconcile as the controller runs it: observe, plan, write the status, carry out the
    actions. Deployments "roll out" instantly (as kwok does) unless told otherwise.
    """

    def __init__(self, replicas: int = 4, **spec: Any) -> None:
        self.body: dict[str, Any] = copy.deepcopy(BASE)
        self.body["spec"].update(model=dict(V1), replicas=replicas,
                                 rollout={"canary": dict(CANARY), "analysis": {"prometheus": PROM, "metrics": [
                                     {"name": "error-rate", "max": 0.01}]}})
        self.body["spec"].update(spec)
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.now = T0
        self.last: Plan | None = None
        self.keep_annotations = False  # a crash between the status write and the annotation removal
        self.problems: list[str] = []  # what the observer's reference checks find (e.g. a missing Secret)
        self.last_probe_at: datetime | None = None  # the controller's memory of the last in-step measurement

    @property
    def md(self) -> ModelDeployment:
        return ModelDeployment.model_validate(self.body)

    def observed(self) -> Observed:
        name = self.body["metadata"]["name"]
        get = self.objects.get
        main = {("Deployment", name), ("Deployment", f"{name}-canary"), ("Service", name),
                ("HorizontalPodAutoscaler", name), ("PodDisruptionBudget", name)}
        return Observed(stable=get(("Deployment", name)), canary=get(("Deployment", f"{name}-canary")),
                        service=get(("Service", name)), hpa=get(("HorizontalPodAutoscaler", name)),
                        pdb=get(("PodDisruptionBudget", name)),
                        routing={k: v for k, v in self.objects.items() if k not in main},
                        problems=list(self.problems), last_probe_at=self.last_probe_at)

    def step(self, analysis: AnalysisResult | None = None, advance: float = 0.0, ready: bool = True) -> Plan:
        self.now += timedelta(seconds=advance)
        p = plan(self.md, self.observed(), self.now, analysis)
        self.write(p)
        if ready:
            self.roll_out()
        self.last = p
        return p

    def write(self, p: Plan, actions: int | None = None) -> None:
        """What the executor does: the status first, then the actions in order (`actions`: only that
        many, as when the operator dies on the way)."""
        self.body["status"] = p.status.model_dump(by_alias=True, mode="json")
        for a in p.actions[:actions]:
            self.apply(a)

    def apply(self, a: Action) -> None:
        key = (a.kind, a.name)
        if a.verb == "apply":
            assert a.body is not None
            self.objects[key] = copy.deepcopy(a.body)
            self.objects[key]["metadata"].setdefault("uid", f"uid-{a.kind}-{a.name}")  # as the server does
        elif a.verb == "scale":
            self.objects[key]["spec"]["replicas"] = 0
        elif a.verb == "patch":  # annotations on the ModelDeployment itself
            if not self.keep_annotations:
                for ann, v in a.body["metadata"]["annotations"].items():  # type: ignore[index]
                    if v is None:
                        self.body["metadata"].get("annotations", {}).pop(ann, None)
        else:
            self.objects.pop(key, None)

    def roll_out(self) -> None:
        """Every Deployment reaches its desired state (kwok makes pods ready at once)."""
        for (kind, _), obj in self.objects.items():
            if kind == "Deployment":
                n = obj["spec"].get("replicas", 1)
                obj["metadata"]["generation"] = 1
                obj["status"] = {"observedGeneration": 1, "replicas": n, "updatedReplicas": n, "readyReplicas": n,
                                 "availableReplicas": n}

    def settle(self) -> Plan:
        """Reconcile until nothing is written (at most 5 passes)."""
        for _ in range(5):
            p = self.step()
            if not p.actions:
                return p
        raise AssertionError("did not settle")

    def start_canary(self, model: dict[str, str] = V2) -> World:
        """v1 settled as stable, then `model` applied and its canary pods ready at step 1."""
        self.settle()
        self.set_model(model)
        self.step()
        self.step()
        return self

    def set_model(self, model: dict[str, str]) -> None:
        self.body["spec"]["model"] = dict(model)
        self.body["metadata"]["generation"] += 1

    def canary(self) -> dict[str, Any] | None:
        return self.objects.get(("Deployment", "room-price-canary"))

    def stable_image(self) -> str:
        return str(self.objects[("Deployment", "room-price")]["spec"]["template"]["spec"]["containers"][0]["image"])

    @property
    def status(self) -> dict[str, Any]:
        return self.body["status"]  # type: ignore[no-any-return]
