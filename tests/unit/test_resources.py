"""Every builder's output is a valid Kubernetes object and carries our conventions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.api import RESERVED_ENV_NAMES
from modeldeploy.crd import generate
from modeldeploy.resources.common import LABEL_NAME, LABEL_REVISION, LABEL_TRACK, label_value, revision_hash
from modeldeploy.resources.deployment import BENTOML_UID, PRESTOP_SLEEP_SECONDS, build_deployment
from modeldeploy.resources.hpa import build_hpa
from modeldeploy.resources.pdb import build_pdb
from modeldeploy.resources.service import build_service, build_track_service
from tests.unit.helpers import effective_user, md, restricted_violations, stored_md, validate


def test_stable_deployment_is_valid_and_restricted() -> None:
    m = md(replicas=3)
    dep = build_deployment(m, "stable", replicas=3)
    validate(dep)
    assert dep["metadata"]["name"] == "room-price"
    assert dep["metadata"]["ownerReferences"][0]["uid"] == m.metadata["uid"]
    assert dep["metadata"]["ownerReferences"][0]["controller"] is True
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["selector"]["matchLabels"] == {LABEL_NAME: "room-price", LABEL_TRACK: "stable"}
    tmpl = dep["spec"]["template"]
    assert tmpl["metadata"]["labels"][LABEL_REVISION] == revision_hash(m.spec.model)
    assert tmpl["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modeldeploy"
    pod = tmpl["spec"]
    (c,) = pod["containers"]
    assert c["ports"][0]["containerPort"] == 3000
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert tmpl["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    # Pod Security "restricted": every required control is set.
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


def test_autoscaled_deployment_leaves_replicas_to_the_hpa() -> None:
    m = md(autoscaling={"minReplicas": 2, "maxReplicas": 6})
    dep = build_deployment(m, "stable", replicas=None)
    validate(dep)
    assert "replicas" not in dep["spec"]
    hpa = build_hpa(m)
    assert hpa is not None
    validate(hpa)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "room-price"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 80


def test_hpa_absent_when_autoscaling_off_or_disabled() -> None:
    assert build_hpa(md()) is None
    assert build_hpa(md(autoscaling={"enabled": False, "maxReplicas": 3})) is None


def test_canary_deployment_has_its_own_name_and_track() -> None:
    m = md()
    dep = build_deployment(m, "canary", replicas=1)
    validate(dep)
    assert dep["metadata"]["name"] == "room-price-canary"
    assert dep["spec"]["selector"]["matchLabels"][LABEL_TRACK] == "canary"
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELDEPLOY_TRACK"] == "canary"


def test_env_resources_pull_secrets_and_args_pass_through() -> None:
    m = md(model={"image": "r/x:1", "port": 8080, "args": ["--workers", "2"], "imagePullSecrets": ["regcred"],
                  "env": [{"name": "A", "value": "1"},
                          {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                  "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": 2147483648}}})
    dep = build_deployment(m, "stable", replicas=1)
    validate(dep)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    user = [e for e in c["env"] if e["name"] in ("A", "B")]
    assert user == [{"name": "A", "value": "1"},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": False}}}]
    assert c["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": 2147483648}}
    assert c["args"] == ["--workers", "2"]
    assert c["ports"][0]["containerPort"] == 8080
    assert dep["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_revision_hash_changes_with_the_model_only() -> None:
    a, b = md(), md(replicas=5)
    assert revision_hash(a.spec.model) == revision_hash(b.spec.model)
    c = md(model={"image": "registry.example/room-price:3e2d"})
    assert revision_hash(a.spec.model) != revision_hash(c.spec.model)


@pytest.mark.parametrize("router", [None, {"gatewayAPI": {"parentRefs": [{"name": "gw"}]}}])
def test_service_selects_by_router(router: dict | None) -> None:
    m = md() if router is None else md(rollout={"canary": {"trafficRouter": router}})
    svc = build_service(m)
    validate(svc)
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    if router is None:
        assert svc["spec"]["selector"] == {LABEL_NAME: "room-price"}  # both tracks: split by replicas
    else:
        assert svc["spec"]["selector"] == {LABEL_NAME: "room-price", LABEL_TRACK: "stable"}
    canary = build_track_service(m, "canary")
    validate(canary)
    assert canary["metadata"]["name"] == "room-price-canary"
    assert canary["spec"]["selector"][LABEL_TRACK] == "canary"


def test_pdb_only_with_more_than_one_replica() -> None:
    assert build_pdb(md(replicas=1)) is None
    assert build_pdb(md()) is None
    pdb = build_pdb(md(replicas=2))
    assert pdb is not None
    validate(pdb)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert build_pdb(md(autoscaling={"minReplicas": 1, "maxReplicas": 4})) is None
    assert build_pdb(md(autoscaling={"minReplicas": 2, "maxReplicas": 4})) is not None


def test_paused_rolling_deployment_is_paused() -> None:
    dep = build_deployment(md(paused=True, rollout={"strategy": "Rolling"}), "stable", replicas=1)
    validate(dep)
    assert dep["spec"]["paused"] is True


@pytest.mark.parametrize("text,expected", [("room_price:2f1c", "room_price_2f1c"), ("-a-", "a"), ("x" * 80, "x" * 63)])
def test_label_values_are_valid(text: str, expected: str) -> None:
    assert label_value(text) == expected


# --------------------------------------------------------------------------------------------
# What a `bentoml containerize` image needs to start on a real kubelet (issue 9)
# --------------------------------------------------------------------------------------------
BENTO_PATH = "/home/bentoml/bento"  # where BentoML's Dockerfile puts the Bento (read-only)

# Shapes of spec.model the pod template must get right, each validated and checked below.
MODELS: dict[str, dict[str, Any]] = {
    "default": {"image": "r/x:1"},
    "port-8080-and-args": {"image": "r/x:1", "port": 8080, "args": ["--api-workers", "1"]},
    "own-user": {"image": "r/x:1", "runAsUser": 20000, "runAsGroup": 0},
    "env-clashes": {"image": "r/x:1", "env": [
        {"name": "BENTOML_HOME", "value": "/srv/bentoml"}, {"name": "HOME", "value": "/srv"},
        {"name": "BENTOML_PORT", "value": "9999"}, {"name": "PORT", "value": "9999"},
        {"name": "MODELDEPLOY_TRACK", "value": "x"}, {"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
}


def _pod(model: dict[str, Any], track: str = "stable") -> dict[str, Any]:
    # As stored: "env-clashes" is what the API refuses now (reserved and repeated names) and a stable
    # model admitted before those rules may still hold.
    dep = build_deployment(stored_md(model=model), track, replicas=1)  # type: ignore[arg-type]
    validate(dep)
    return dep["spec"]["template"]["spec"]


def _env(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}


@pytest.mark.parametrize("case", MODELS)
@pytest.mark.parametrize("track", ["stable", "canary"])
def test_model_pod_is_admitted_under_restricted(case: str, track: str) -> None:
    pod = _pod(MODELS[case], track)
    assert restricted_violations(pod) == []
    (c,) = pod["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # The image's USER is a name; the kubelet only starts it under runAsNonRoot with a number.
    ((uid, gid),) = effective_user(pod)
    assert isinstance(uid, int) and uid > 0 and isinstance(gid, int)
    assert pod["securityContext"]["fsGroup"] == gid
    names = [e["name"] for e in c["env"]]
    assert len(names) == len(set(names)), names


def test_model_pod_runs_as_bentomls_numeric_user_unless_told_otherwise() -> None:
    assert BENTOML_UID == 1034
    assert effective_user(_pod(MODELS["default"])) == [(1034, 1034)]
    assert _pod(MODELS["default"])["securityContext"]["fsGroup"] == 1034
    pod = _pod(MODELS["own-user"])
    assert effective_user(pod) == [(20000, 0)]
    assert pod["securityContext"]["fsGroup"] == 0


def test_crd_refuses_root_and_reserved_env_names() -> None:
    model = generate()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["model"]
    assert model["properties"]["runAsUser"]["minimum"] == 1
    assert model["properties"]["runAsGroup"]["minimum"] == 0
    (rule,) = [r for r in model["x-kubernetes-validations"] if r["message"].startswith("model.env must not set")]
    for name in RESERVED_ENV_NAMES:
        assert f"'{name}'" in rule["rule"] and name in rule["message"]
    assert {"BENTOML_PORT", "PORT"} <= set(RESERVED_ENV_NAMES)


def _mounts(pod: dict[str, Any]) -> dict[str, str]:
    """mountPath -> volume name, for the model container."""
    return {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}


def _writable(pod: dict[str, Any], path: str) -> bool:
    """`path` lies on an emptyDir the container mounts read-write."""
    vols = {v["name"]: v for v in pod["volumes"]}
    for mount in pod["containers"][0]["volumeMounts"]:
        inside = path == mount["mountPath"] or path.startswith(mount["mountPath"].rstrip("/") + "/")
        if inside and not mount.get("readOnly") and "emptyDir" in vols[mount["name"]]:
            return True
    return False


def test_bentoml_home_tmp_and_home_are_writable_and_the_bento_is_not_shadowed() -> None:
    pod = _pod(MODELS["default"])
    env = _env(pod)
    # BentoML creates bentos/, models/, envs/, tmp/, prometheus_multiproc_dir/ under BENTOML_HOME.
    assert _writable(pod, env["BENTOML_HOME"] + "/bentos")
    assert _writable(pod, "/tmp/x") and env["HOME"] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    for path in _mounts(pod):
        # No mount at /home/bentoml or above/below the Bento: it must stay the image's.
        assert not (BENTO_PATH + "/").startswith(path.rstrip("/") + "/"), path
        assert not path.startswith(BENTO_PATH), path
    # Every mount has its own volume and every volume is an emptyDir with a size limit.
    assert sorted(_mounts(pod).values()) == sorted(v["name"] for v in pod["volumes"])
    assert all(v["emptyDir"]["sizeLimit"] for v in pod["volumes"])


@pytest.mark.parametrize("port", [3000, 8080])
def test_bentoml_listens_on_spec_model_port(port: int) -> None:
    m = md(model={"image": "r/x:1", "port": port})
    dep = build_deployment(m, "stable", replicas=1)
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    # The entrypoint runs `bentoml serve`, whose --port reads BENTOML_PORT (bentoml_cli/serve.py);
    # it copies PORT over BENTOML_PORT, so PORT must not be set. BENTOML_HOST defaults to 0.0.0.0.
    env = _env(pod)
    assert env["BENTOML_PORT"] == str(port)
    assert "PORT" not in env and "BENTOML_HOST" not in env
    assert c["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] == "http"
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)


def test_user_env_overrides_defaults_but_not_the_port_and_no_name_repeats() -> None:
    pod = _pod(MODELS["env-clashes"], "canary")
    names = [e["name"] for e in pod["containers"][0]["env"]]
    assert len(names) == len(set(names)), names
    env = _env(pod)
    assert env["BENTOML_HOME"] == "/srv/bentoml" and env["HOME"] == "/srv"  # the user's, not ours
    assert env["BENTOML_PORT"] == "3000" and "PORT" not in env  # spec.model.port, always
    assert env["MODELDEPLOY_TRACK"] == "canary"
    assert env["A"] == "2"  # the last of a repeated name, as Kubernetes does
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    # Defaults come first, so the user's env may refer to them as $(BENTOML_HOME).
    assert names.index("PYTHONDONTWRITEBYTECODE") < names.index("A")


def test_probes_suit_a_busy_one_worker_server() -> None:
    (c,) = _pod(MODELS["default"])["containers"]
    ready, live, start = c["readinessProbe"], c["livenessProbe"], c["startupProbe"]
    assert ready["httpGet"]["path"] == "/readyz" and live["httpGet"]["path"] == "/livez"
    for p in (ready, live, start):
        assert 3 <= p["timeoutSeconds"] <= 5
    # A server busy for tens of seconds leaves the Service but is not restarted ...
    assert live["periodSeconds"] * live["failureThreshold"] >= 60
    assert ready["periodSeconds"] * ready["failureThreshold"] <= 15
    # ... and a slow model load (20-40 s measured) is far inside the startup budget.
    assert start["periodSeconds"] * start["failureThreshold"] >= 120


def test_termination_waits_for_endpoints_to_go_before_sigterm() -> None:
    pod = _pod(MODELS["default"])
    (c,) = pod["containers"]
    # PodLifecycleSleepAction: needs no binary in the image.
    assert c["lifecycle"] == {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}}
    assert PRESTOP_SLEEP_SECONDS >= 5
    # The sleep counts against the grace period; what is left must cover in-flight requests.
    assert pod["terminationGracePeriodSeconds"] >= PRESTOP_SLEEP_SECONDS + 20


def test_revision_hash_ignores_unset_optional_fields() -> None:
    """Adding an optional field to the API must not give every existing object a new revision."""
    base = md(model={"image": "r/x:1"}).spec.model
    assert "runAsUser" not in base.model_dump(by_alias=True, exclude_none=True)
    assert revision_hash(base) == revision_hash(md(model={"image": "r/x:1", "runAsUser": None}).spec.model)
    # A set user does shape the pods: it is a new revision.
    assert revision_hash(base) != revision_hash(md(model={"image": "r/x:1", "runAsUser": 1034}).spec.model)


def test_operator_install_manifest_is_restricted_with_a_numeric_user_and_writable_tmp() -> None:
    docs = list(yaml.safe_load_all((Path(__file__).resolve().parents[2] / "manifests/install/operator.yaml")
                                   .read_text()))
    (dep,) = [d for d in docs if d and d["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert all(isinstance(u, int) and u > 0 for u, _ in effective_user(pod))
    assert _writable(pod, "/tmp/x")


def test_the_restricted_checker_catches_what_admission_refuses() -> None:
    good = _pod(MODELS["default"])
    assert restricted_violations(good) == []
    bad = yaml.safe_load(yaml.safe_dump(good))  # a deep copy
    c = bad["containers"][0]
    del c["securityContext"]["allowPrivilegeEscalation"]
    c["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    del c["securityContext"]["seccompProfile"], bad["securityContext"]["seccompProfile"]
    bad["securityContext"]["runAsNonRoot"] = False
    del c["securityContext"]["runAsNonRoot"]
    bad["hostNetwork"] = True
    bad["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    c["ports"][0]["hostPort"] = 80
    found = " | ".join(restricted_violations(bad))
    for what in ("allowPrivilegeEscalation", "drop ALL", "SYS_ADMIN", "seccompProfile", "runAsNonRoot",
                 "hostNetwork", "hostPath", "hostPort"):
        assert what in found, what
    # Without runAsUser the image's named USER decides: the kubelet cannot verify non-root.
    del bad["securityContext"]["runAsUser"]
    assert effective_user(bad)[0][0] is None
