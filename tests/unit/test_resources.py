"""Every builder's output is a valid Kubernetes object and carries our conventions."""

from __future__ import annotations

import pytest

from modeldeploy.resources.common import LABEL_NAME, LABEL_REVISION, LABEL_TRACK, label_value, revision_hash
from modeldeploy.resources.deployment import build_deployment
from modeldeploy.resources.hpa import build_hpa
from modeldeploy.resources.pdb import build_pdb
from modeldeploy.resources.service import build_service, build_track_service
from tests.unit.helpers import md, validate


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
    assert c["env"][:2] == [{"name": "A", "value": "1"},
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
