#!/usr/bin/env python3
"""`make bench-peers`: modeldeploy, Flagger and Argo Rollouts side by side, on the same node and the same fault.

Everything real and shared: the local control plane with the real node (the pods run the Bento
images hack/images.py builds: v1 stable, v2 answering 50 % of /predict with HTTP 500 through
`MODELDEPLOY_FAULT_ERROR_RATE`, v3 healthy), one Prometheus discovering the pods (5 s scrapes),
one Traefik as the Gateway API data plane (hack/traefik.py), the same pod template (the
operator's own builder, so probes, resources and securityContext are identical) and the same
load (40 requests/s, every answer naming its model version). Each tool gets equivalent settings:

- traffic: ours the `gatewayAPI` router on Traefik; Flagger its `gatewayapi:v1` provider on
  Traefik; Argo a basic canary (replica ratio behind one Service, like our `replicas` router);
- steps 20/40/60/80 every 10 s: ours `steps` + `interval: 10s`; Flagger `stepWeights` and analysis
  `interval: 10s` (its minimum); Argo `setWeight` steps each followed by `pause: 10s`;
- the check: error rate <= 0.05 from the same BentoML counters. Ours is the built-in `error-rate`
  (its window is the interval); the peers get the same PromQL (`error_rate_promql`) over 30 s,
  Flagger as a MetricTemplate, Argo as a background AnalysisTemplate measured every 10 s;
- roll back after the first failed check: ours failureLimit 1; Flagger threshold 1; Argo
  failureLimit 0 (Flagger's threshold N is Argo's failureLimit N-1);
- scoped to the canary's pods by each tool's own labels: ours `modeldeploy.io/track` and revision;
  Flagger `app=<target>` (its primary's pods are `app=<target>-primary`); Argo
  `rollouts-pod-template-hash` = the latest hash (`podTemplateHashValue: Latest`).

Everything not listed is each tool's documented default (Flagger's 10 s control loop,
Argo's consecutiveErrorLimit 4, our measurementInterval 5 s and confidence 0.99).

Per tool, interleaved (tool by tool within a round, BENCH_RUNS rounds, default 5), a faulty and a
healthy canary each round, then once each: Prometheus down (the tool's metrics address points
where nothing listens) and no traffic. Measured from the clients' answers and the routing
objects, never from a tool's own report: fault onset (first answer by the faulty version) ->
canary weight 0 (the route's weight; Argo: the canary ReplicaSet's share of ready pods) and ->
the last answer by the faulty version; the faulty version's failed answers (what users saw);
apply -> promoted for a healthy canary; faulty promotions; healthy rollbacks.

Results: bench/results/peers.json. Needs root and the machine's real node: run it under
`flock /tmp/modeldeploy-machine.lock`.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "hack"), str(REPO / "operator")]

from kubernetes import client, config  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

from canarylab import ServiceLoad  # noqa: E402
from localcluster import LocalCluster, bin_dir, free_port, wait_until  # noqa: E402
from localnet import NODE_IP  # noqa: E402
from localnode import real_pods_namespace_metadata  # noqa: E402
from localoperator import OperatorProcess  # noqa: E402
from localprom import PrometheusServer, cluster_prometheus  # noqa: E402
from peers import ArgoRollouts, Flagger, PeerController  # noqa: E402
from traefik import TraefikGateway  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
APPEND = os.environ.get("BENCH_APPEND", "0") == "1"
TOOLS = tuple(os.environ.get("BENCH_TOOLS", "modeldeploy,flagger,argo-rollouts").split(","))
NAME = "price"
STEPS = [20, 40, 60, 80]
INTERVAL = "10s"
THRESHOLD = 0.05
ERROR_RATE = 0.5
WINDOW = "30s"
SCRAPE = "5s"
REPLICAS = 2
RESOURCES = {"requests": {"cpu": "50m", "memory": "160Mi"}, "limits": {"memory": "1Gi"}}
TOOL_LABEL = "bench.modeldeploy.io/tool"
FAULT_ENV = [{"name": "MODELDEPLOY_FAULT_ERROR_RATE", "value": str(ERROR_RATE)}]
# Bounds: each run stops by itself.
DECIDE_S = {"faulty": 150.0, "healthy": 200.0, "prometheus_down": 150.0, "no_traffic": 150.0}


def error_rate_promql(selector: str, window: str) -> str:
    """The one error-rate expression the peers are given (ours is the same over its own labels)."""
    sel = selector + ',endpoint!~"/livez|/readyz|/healthz|/metrics"'
    return (f'sum(increase(bentoml_service_request_total{{{sel},http_response_code=~"5.."}}[{window}])) '
            f"/ sum(increase(bentoml_service_request_total{{{sel}}}[{window}]))")


@dataclass
class Lab:
    """What every run shares."""

    cluster: LocalCluster
    api: client.ApiClient
    prom: PrometheusServer
    gateway: TraefikGateway
    images: dict[str, str]      # "v1" -> image
    versions: dict[str, str]    # "v1" -> the model version its answers name
    work: Path

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def model(self, v: str, env: list[dict[str, str]] | None = None) -> dict[str, Any]:
        return {"image": self.images[v], "bento": f"room_price:{v}", "resources": RESOURCES, "env": env or []}

    def pod_template(self, tool: str, model: dict[str, Any]) -> dict[str, Any]:
        """Our builder's pod template for `model`, labelled for a peer instead of for the operator."""
        from modeldeploy.api import ModelDeployment
        from modeldeploy.resources.deployment import pod_template

        md = ModelDeployment.model_validate({"metadata": {"name": NAME, "namespace": "x"},
                                             "spec": {"model": model, "replicas": REPLICAS}})
        tpl = pod_template(md, "stable", md.spec.model)
        tpl["metadata"]["labels"] = {"app": NAME, TOOL_LABEL: tool}
        return tpl

    def route_canary_weight(self, ns: str) -> int | None:
        try:
            route = self.custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", ns, "httproutes", NAME)
        except ApiException:
            return None
        for ref in route["spec"]["rules"][0]["backendRefs"]:
            if ref["name"].endswith("-canary"):
                return int(ref.get("weight", 1))
        return None

    def gateway_answers(self, host: str) -> bool:
        import httpx
        try:
            r = httpx.post(self.gateway.url + "/predict", json={"rows": [[62.0, 3.0, 1.0]]}, headers={"Host": host},
                           timeout=3)
            return r.status_code == 200
        except httpx.HTTPError:
            return False


@dataclass
class Observation:
    weight: int | None          # the canary's share of traffic as the data plane is told (percent)
    outcome: str | None = None  # "promoted" | "rolled_back" | None (still deciding)
    detail: str = ""


class Tool:
    """One tool's objects in one namespace: deploy v1, apply a canary, observe."""

    name = ""

    def __init__(self, lab: Lab, ns: str, prometheus: str) -> None:
        self.lab, self.ns, self.prometheus = lab, ns, prometheus
        self.host = f"{ns}.bench.local"
        self.controller: PeerController | None = None

    def start(self) -> None:
        """Start the tool's controller for this namespace (the operator runs once for all)."""

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()

    def deploy(self, model: dict[str, Any]) -> None:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def apply(self, model: dict[str, Any]) -> None:
        raise NotImplementedError

    def observe(self) -> Observation:
        raise NotImplementedError

    def load(self) -> ServiceLoad:
        return ServiceLoad(self.lab.gateway.url, headers={"Host": self.host}, rate_per_second=40, max_seconds=300)


class Ours(Tool):
    name = "modeldeploy"

    def body(self, model: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": NAME},
                "spec": {"model": model, "replicas": REPLICAS, "rollout": {
                    "strategy": "Canary",
                    "canary": {"steps": STEPS, "interval": INTERVAL, "trafficRouter": {"gatewayAPI": {
                        "parentRefs": [self.lab.gateway.parent_ref()], "hostnames": [self.host]}}},
                    "analysis": {"prometheus": {"address": self.prometheus, "timeout": "2s"}, "minRequests": 10,
                                 "failureLimit": 1, "metrics": [{"name": "error-rate", "max": THRESHOLD}]}}}}

    def deploy(self, model: dict[str, Any]) -> None:
        self.lab.custom.create_namespaced_custom_object("modeldeploy.io", "v1alpha1", self.ns, "modeldeployments",
                                                        self.body(model))

    def _status(self) -> dict[str, Any]:
        obj = self.lab.custom.get_namespaced_custom_object("modeldeploy.io", "v1alpha1", self.ns, "modeldeployments",
                                                           NAME)
        return obj.get("status", {})  # type: ignore[no-any-return]

    def ready(self) -> bool:
        st = self._status()
        return st.get("phase") == "Healthy" and self.lab.gateway.route_accepted(self.ns, NAME) \
            and self.lab.gateway_answers(self.host)

    def apply(self, model: dict[str, Any]) -> None:
        self.image = model["image"]
        self.lab.custom.patch_namespaced_custom_object("modeldeploy.io", "v1alpha1", self.ns, "modeldeployments",
                                                       NAME, {"spec": {"model": model}})

    def observe(self) -> Observation:
        st = self._status()
        w = self.lab.route_canary_weight(self.ns)
        if st.get("phase") in ("RolledBack", "Failed"):
            return Observation(w, "rolled_back", st.get("message", ""))
        if st.get("phase") == "Healthy" and st.get("canary") is None \
                and st.get("stable", {}).get("image") == self.image:
            return Observation(w, "promoted")
        return Observation(w, None, f"{st.get('phase')} step {st.get('currentStep')}: {st.get('message', '')}")


class FlaggerTool(Tool):
    name = "flagger"

    def start(self) -> None:
        self.controller = Flagger(self.lab.cluster.kubeconfig, self.ns, self.lab.work / self.ns,
                                  prometheus=self.prometheus).start()

    def deploy(self, model: dict[str, Any]) -> None:
        lab, ns = self.lab, self.ns
        lab.apps.create_namespaced_deployment(ns, {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME},
            "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": NAME}},
                     "template": lab.pod_template(self.name, model)}})
        lab.custom.create_namespaced_custom_object("flagger.app", "v1beta1", ns, "metrictemplates", {
            "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate", "metadata": {"name": "error-rate"},
            "spec": {"provider": {"type": "prometheus", "address": self.prometheus},
                     "query": error_rate_promql('namespace="{{ namespace }}",app="{{ target }}"', "{{ interval }}")}})
        lab.custom.create_namespaced_custom_object("flagger.app", "v1beta1", ns, "canaries", {
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": NAME},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
                     "service": {"port": 3000, "targetPort": "http", "hosts": [self.host],
                                 "gatewayRefs": [lab.gateway.parent_ref()]},
                     "analysis": {"interval": INTERVAL, "threshold": 1, "stepWeights": STEPS,
                                  "metrics": [{"name": "error-rate", "interval": WINDOW,
                                               "templateRef": {"name": "error-rate"},
                                               "thresholdRange": {"max": THRESHOLD}}]}}})

    def _canary(self) -> dict[str, Any]:
        return self.lab.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
            "flagger.app", "v1beta1", self.ns, "canaries", NAME)

    def ready(self) -> bool:
        return self._canary().get("status", {}).get("phase") in ("Initialized", "Succeeded") \
            and self.lab.gateway.route_accepted(self.ns, NAME) and self.lab.gateway_answers(self.host)

    def apply(self, model: dict[str, Any]) -> None:
        self.lab.apps.patch_namespaced_deployment(NAME, self.ns, {"spec": {"template": self.lab.pod_template(
            self.name, model)}})

    def observe(self) -> Observation:
        st = self._canary().get("status", {})
        w = self.lab.route_canary_weight(self.ns)
        detail = f"{st.get('phase')} weight {st.get('canaryWeight')} failedChecks {st.get('failedChecks')}"
        if st.get("phase") == "Failed":
            return Observation(w, "rolled_back", detail)
        if st.get("phase") == "Succeeded":
            return Observation(w, "promoted", detail)
        return Observation(w, None, detail)


class ArgoTool(Tool):
    name = "argo-rollouts"

    def start(self) -> None:
        self.controller = ArgoRollouts(self.lab.cluster.kubeconfig, self.ns, self.lab.work / self.ns).start()

    def deploy(self, model: dict[str, Any]) -> None:
        lab, ns = self.lab, self.ns
        lab.core.create_namespaced_service(ns, {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME},
            "spec": {"selector": {"app": NAME}, "ports": [{"name": "http", "port": 3000, "targetPort": "http"}]}})
        lab.custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", ns, "analysistemplates", {
            "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate", "metadata": {"name": "error-rate"},
            "spec": {"args": [{"name": "canary-hash"}],
                     "metrics": [{"name": "error-rate", "interval": INTERVAL, "failureLimit": 0,
                                  # An empty result cannot be indexed: an Error measurement (retried up
                                  # to consecutiveErrorLimit), never a success. (`len(result) > 0 && ...`
                                  # makes it a failure: Argo aborted a canary with no pods yet.)
                                  "successCondition": f"result[0] <= {THRESHOLD}",
                                  "provider": {"prometheus": {"address": self.prometheus, "query": error_rate_promql(
                                      f'namespace="{ns}",rollouts_pod_template_hash="{{{{args.canary-hash}}}}"',
                                      WINDOW)}}}]}})
        steps: list[dict[str, Any]] = []
        for w in STEPS:
            steps += [{"setWeight": w}, {"pause": {"duration": INTERVAL}}]
        lab.custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", ns, "rollouts", {
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": NAME},
            "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": NAME}},
                     "template": lab.pod_template(self.name, model),
                     # The analysis starts once the first weight is set (the canary has pods), as
                     # ours and Flagger's do: Argo's documented `startingStep`.
                     "strategy": {"canary": {"steps": steps, "analysis": {
                         "startingStep": 1, "templates": [{"templateName": "error-rate"}],
                         "args": [{"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}}]}}}}})

    def _rollout(self) -> dict[str, Any]:
        return self.lab.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
            "argoproj.io", "v1alpha1", self.ns, "rollouts", NAME)

    def ready(self) -> bool:
        import httpx
        if self._rollout().get("status", {}).get("phase") != "Healthy":
            return False
        try:
            return httpx.get(self.url() + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def url(self) -> str:
        svc = self.lab.core.read_namespaced_service(NAME, self.ns)
        return f"http://{svc.spec.cluster_ip}:3000"

    def load(self) -> ServiceLoad:
        return ServiceLoad(self.url(), rate_per_second=40, max_seconds=300)

    def apply(self, model: dict[str, Any]) -> None:
        self.stable_before = self._rollout().get("status", {}).get("stableRS")
        self.lab.custom.patch_namespaced_custom_object("argoproj.io", "v1alpha1", self.ns, "rollouts", NAME, {
            "spec": {"template": self.lab.pod_template(self.name, model)}})

    def observe(self) -> Observation:
        ro = self._rollout()
        st = ro.get("status", {})
        current, stable = st.get("currentPodHash"), st.get("stableRS")
        ready = {rs.metadata.labels.get("rollouts-pod-template-hash"): rs.status.ready_replicas or 0
                 for rs in self.lab.apps.list_namespaced_replica_set(self.ns).items}
        canary_ready = ready.get(current, 0) if current != stable else 0
        total = sum(ready.values())
        w = round(100 * canary_ready / total) if total else None
        detail = f"{st.get('phase')} step {st.get('currentStepIndex')} abort {st.get('abort')}: {st.get('message')}"
        if st.get("abort") or st.get("phase") == "Degraded":
            return Observation(w, "rolled_back", detail)
        if st.get("phase") == "Healthy" and current == stable and stable != self.stable_before:
            return Observation(w, "promoted", detail)
        return Observation(w, None, detail)


TOOL_CLASSES: dict[str, type[Tool]] = {"modeldeploy": Ours, "flagger": FlaggerTool, "argo-rollouts": ArgoTool}


def new_real_namespace(lab: Lab, prefix: str) -> str:
    ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
    lab.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns,
                                                                              **real_pods_namespace_metadata())))

    def sa() -> bool:
        try:
            lab.core.read_namespaced_service_account("default", ns)
            return True
        except ApiException:
            return False

    wait_until(sa, 30, f"default ServiceAccount in {ns}")
    return ns


def one_run(lab: Lab, tool_name: str, kind: str, run: int) -> dict[str, Any]:
    """kind: faulty | healthy | prometheus_down | no_traffic."""
    ns = new_real_namespace(lab, f"peers-{tool_name[:6]}-{kind[:6].replace('_', '')}")
    prometheus = lab.prom.url if kind != "prometheus_down" else f"http://{NODE_IP}:{free_port()}"
    tool = TOOL_CLASSES[tool_name](lab, ns, prometheus)
    canary_v = "v2" if kind == "faulty" else "v3"
    faulty_version = lab.versions["v2"] if kind == "faulty" else None
    load: ServiceLoad | None = None
    row: dict[str, Any] = {"tool": tool_name, "kind": kind, "run": run, "namespace": ns}
    try:
        tool.start()
        tool.deploy(lab.model("v1"))
        wait_until(tool.ready, 240, f"{tool_name} v1 ready and answering in {ns}", interval=0.5)
        if kind != "no_traffic":
            load = tool.load().start()
            wait_until(lambda: len(load.window()) >= 20 if load else True, 30, "20 answers of v1")
        t_apply = time.monotonic()
        tool.apply(lab.model(canary_v, FAULT_ENV if kind == "faulty" else None))
        weights: list[tuple[float, int | None]] = []
        obs = Observation(None)
        deadline = t_apply + DECIDE_S[kind]
        while time.monotonic() < deadline:
            obs = tool.observe()
            weights.append((time.monotonic(), obs.weight))
            if obs.outcome is not None and (obs.weight in (0, None) or obs.outcome == "promoted"):
                break
            time.sleep(0.2)
        t_end = time.monotonic()
        row.update(outcome=obs.outcome or "undecided", detail=obs.detail, decided_after_s=round(t_end - t_apply, 1),
                   max_weight=max((w for _, w in weights if w is not None), default=None))
        if load is not None and faulty_version is not None:
            # Let the last in-flight requests land (bounded), then read what clients saw.
            time.sleep(3)
            faulty = [r for r in load.window(t_apply) if r[1] == faulty_version]
            onset = faulty[0][0] if faulty else None
            w0 = next((t for t, w in weights if onset is not None and t >= onset and w == 0), None)
            row.update(
                onset_to_weight0_s=round(w0 - onset, 2) if onset is not None and w0 is not None else None,
                onset_to_last_faulty_answer_s=round(faulty[-1][0] - onset, 2) if onset is not None else None,
                faulty_answers=len(faulty), faulty_failed=sum(1 for r in faulty if not 0 < r[2] < 500),
                other_failed=sum(1 for r in load.window(t_apply) if r[1] != faulty_version and not 0 < r[2] < 500))
        elif kind == "healthy" and obs.outcome == "promoted":
            row["apply_to_promoted_s"] = round(t_end - t_apply, 1)
        if load is not None and kind != "faulty":
            row["failed"] = sum(1 for r in load.window(t_apply) if not 0 < r[2] < 500)
    except Exception as e:  # one broken run is recorded, not the end of the benchmark
        row.update(outcome="error", detail=f"{type(e).__name__}: {e}"[:2000])
        if tool.controller is not None:
            row["controller_log"] = tool.controller.log_tail(1500)
    finally:
        if load is not None:
            load.stop()
        tool.stop()
        with contextlib.suppress(ApiException):
            lab.core.delete_namespace(ns)
    return row


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def med(values: list[Any]) -> float | None:
        vs = [v for v in values if v is not None]
        return round(statistics.median(vs), 2) if vs else None

    out: dict[str, Any] = {}
    for tool in TOOLS:
        f = [r for r in rows if r["tool"] == tool and r["kind"] == "faulty"]
        h = [r for r in rows if r["tool"] == tool and r["kind"] == "healthy"]
        special = {r["kind"]: {k: r.get(k) for k in ("outcome", "decided_after_s", "max_weight", "detail", "failed")}
                   for r in rows if r["tool"] == tool and r["kind"] in ("prometheus_down", "no_traffic")}
        out[tool] = {
            "faulty_runs": len(f), "healthy_runs": len(h),
            "onset_to_weight0_median_s": med([r.get("onset_to_weight0_s") for r in f]),
            "onset_to_weight0_max_s": max((r["onset_to_weight0_s"] for r in f if r.get("onset_to_weight0_s")),
                                          default=None),
            "onset_to_last_faulty_answer_median_s": med([r.get("onset_to_last_faulty_answer_s") for r in f]),
            "faulty_failed_median": med([r.get("faulty_failed") for r in f]),
            "faulty_promotions": sum(r["outcome"] == "promoted" for r in f),
            "faulty_rolled_back": sum(r["outcome"] == "rolled_back" for r in f),
            "healthy_promoted": sum(r["outcome"] == "promoted" for r in h),
            "healthy_rolled_back": sum(r["outcome"] == "rolled_back" for r in h),
            "healthy_apply_to_promoted_median_s": med([r.get("apply_to_promoted_s") for r in h]),
            "errors": sum(r["outcome"] == "error" for r in rows if r["tool"] == tool),
            **special,
        }
    ours = out.get("modeldeploy", {})
    for peer in TOOLS:
        if peer == "modeldeploy" or not ours:
            continue
        ratios = {}
        for key in ("onset_to_weight0_median_s", "onset_to_last_faulty_answer_median_s", "faulty_failed_median"):
            a, b = ours.get(key), out[peer].get(key)
            ratios[key] = round(a / b, 2) if a is not None and b else None
        out[peer]["ours_over_theirs"] = ratios
    return out


def start_lab(work: Path) -> tuple[Lab, list[Callable[[], None]]]:
    """Cluster with the real node, images, Prometheus, Traefik, every CRD, and our operator."""
    from images import import_test_models

    stops: list[Callable[[], None]] = []
    cluster = LocalCluster(state_dir=work / "cluster", node=True)
    cluster.up()
    stops.append(lambda: cluster.down(quiet=True))
    node = cluster.real_node()
    images, versions = import_test_models(node)
    prom = cluster_prometheus(cluster.server, cluster.state_dir / "pki", cluster.bins or bin_dir(), work / "prometheus",
                              NODE_IP, scrape_interval=SCRAPE)
    # The peers' pods, scraped the same way, with the labels their queries select on.
    peer_job = json.loads(json.dumps(prom.extra_jobs[0]))
    peer_job["job_name"] = "bench-peers"
    peer_job["relabel_configs"][0] = {"source_labels": [f"__meta_kubernetes_pod_label_{_label(TOOL_LABEL)}"],
                                      "regex": ".+", "action": "keep"}
    peer_job["relabel_configs"] += [
        {"source_labels": ["__meta_kubernetes_pod_label_app"], "target_label": "app"},
        {"source_labels": ["__meta_kubernetes_pod_label_rollouts_pod_template_hash"],
         "target_label": "rollouts_pod_template_hash"}]
    prom.extra_jobs.append(peer_job)
    (work / "prometheus").mkdir(parents=True, exist_ok=True)
    prom.start()
    stops.append(prom.stop)
    gateway = TraefikGateway(cluster.kubeconfig, workdir=work / "traefik")
    gateway.install_crds(cluster.install_crd)
    gateway.start()
    stops.append(gateway.stop)
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    lab = Lab(cluster, api, prom, gateway, images, versions, work)
    cluster.install_crd(REPO / "crds" / "modeldeploy.io_modeldeployments.yaml", "modeldeployments.modeldeploy.io")
    for peer in (Flagger(cluster.kubeconfig, "-", work, prometheus=""), ArgoRollouts(cluster.kubeconfig, "-", work)):
        peer.install_crds(cluster.install_crd)
    if "modeldeploy" in TOOLS:
        op = OperatorProcess(str(cluster.kubeconfig), work / "operator.log").start()
        stops.append(op.stop)
    return lab, stops


def _label(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def markdown_table(summary: dict[str, Any]) -> str:
    """The README's table: one row per tool, ours over theirs for the peers."""
    def cell(v: Any, unit: str = "") -> str:
        return "-" if v is None else f"{v}{unit}"

    rows = ["| tool | onset → weight 0 (median / max) | onset → last faulty answer | faulty-version failures "
            "(median) | faulty promoted | healthy promoted / rolled back | healthy apply → promoted | "
            "Prometheus down | no traffic |", "|---|---|---|---|---|---|---|---|---|"]
    for tool, s in summary.items():
        special = [f"{(s.get(k) or {}).get('outcome', '-')} after {cell((s.get(k) or {}).get('decided_after_s'), ' s')}"
                   for k in ("prometheus_down", "no_traffic")]
        rows.append(f"| {tool} | {cell(s['onset_to_weight0_median_s'], ' s')} / "
                    f"{cell(s['onset_to_weight0_max_s'], ' s')} | "
                    f"{cell(s['onset_to_last_faulty_answer_median_s'], ' s')} | {cell(s['faulty_failed_median'])} | "
                    f"{s['faulty_promotions']} of {s['faulty_runs']} | {s['healthy_promoted']} / "
                    f"{s['healthy_rolled_back']} of {s['healthy_runs']} | "
                    f"{cell(s['healthy_apply_to_promoted_median_s'], ' s')} | {special[0]} | {special[1]} |")
    ratios = [f"{peer}: time to weight 0 {cell(r.get('onset_to_weight0_median_s'))}, to the last faulty answer "
              f"{cell(r.get('onset_to_last_faulty_answer_median_s'))}, faulty failures "
              f"{cell(r.get('faulty_failed_median'))}"
              for peer, r in ((p, s.get("ours_over_theirs")) for p, s in summary.items()) if r]
    return "\n".join(rows) + ("\n\nOurs over theirs (medians): " + "; ".join(ratios) + "." if ratios else "")


def main() -> int:
    if sys.argv[1:] == ["--table"]:
        print(markdown_table(json.loads((REPO / "bench" / "results" / "peers.json").read_text())["summary"]))
        return 0
    if os.geteuid() != 0:
        raise SystemExit("bench-peers needs the real node (root); run it under flock /tmp/modeldeploy-machine.lock")
    work = REPO / ".local" / "bench-peers"
    work.mkdir(parents=True, exist_ok=True)
    dest = REPO / "bench" / "results" / "peers.json"
    # BENCH_APPEND=1: more rounds added to the recorded ones (same settings), the one-off cases kept.
    previous = json.loads(dest.read_text()) if APPEND and dest.exists() else {}
    rows: list[dict[str, Any]] = list(previous.get("runs", []))
    done = int(previous.get("runs_per_tool", 0))
    t0 = time.monotonic()
    stops: list[Callable[[], None]] = []
    try:
        lab, stops = start_lab(work)
        print(f"lab up in {time.monotonic() - t0:.0f}s; versions {lab.versions}", flush=True)
        for run in range(done, done + RUNS):
            for kind in ("faulty", "healthy"):
                for tool in TOOLS:
                    rows.append(one_run(lab, tool, kind, run))
                    print(json.dumps({k: v for k, v in rows[-1].items() if k != "controller_log"}), flush=True)
        for kind in ("prometheus_down", "no_traffic") if not previous else ():
            for tool in TOOLS:
                rows.append(one_run(lab, tool, kind, 0))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "controller_log"}), flush=True)
    finally:
        for stop in reversed(stops):
            try:
                stop()
            except Exception as e:  # keep tearing down the rest
                print(f"teardown: {e}", file=sys.stderr)
    summary = summarise(rows)
    out = {"benchmark": "peers: modeldeploy vs Flagger vs Argo Rollouts", "runs_per_tool": done + RUNS,
           "settings": {"steps": STEPS, "interval": INTERVAL, "threshold": THRESHOLD, "error_rate_injected": ERROR_RATE,
                        "peer_query_window": WINDOW, "scrape_interval": SCRAPE, "replicas": REPLICAS,
                        "load_rps": 40},
           "versions": {"flagger": "v1.44.0", "argo-rollouts": "v1.10.1", "traefik": "v3.6.12"},
           "summary": summary, "runs": rows, "machine": {"cpus": os.cpu_count()},
           "seconds": round(time.monotonic() - t0) + int(previous.get("seconds", 0)),
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written: {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
