# modeldeploy — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help setup test test-unit test-readme lint typecheck cluster-up cluster-down cluster-images cluster-status traefik-up traefik-down \
        demo kind-demo kind-up kind-down kind-node-image test-kind bench-operator bench-serving bench-canary bench-baseline bench-peers \
        chart-lint crd image images test-e2e clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2}'

setup: ## install everything: Debian packages, .venv, control-plane binaries (idempotent)
	@hack/setup.sh

test: setup ## setup, then lint, typecheck, the images (cached) and the whole test suite (all tiers; README and kind last)
	$(MAKE) --no-print-directory lint typecheck
	$(PY) hack/images.py build all
	$(PY) -m pytest -q --ignore=tests/kind --ignore=tests/readme
	$(PY) -m pytest -q tests/readme
	$(PY) -m pytest -q tests/kind

test-readme: setup ## run the README's shell blocks as written (own pytest session: it starts the local cluster) and make demo
	$(PY) -m pytest -q tests/readme

test-unit: ## fast tests only (no servers)
	$(PY) -m pytest -q tests/unit

lint: ## ruff
	$(VENV)/bin/ruff check operator bento tests hack

typecheck: ## mypy
	$(VENV)/bin/mypy

cluster-up: setup ## start the local cluster: control plane, a real node (containerd, kubelet, kube-proxy; root) and kwok
	@$(PY) hack/localcluster.py up

cluster-down: ## stop what cluster-up started; remove the pod bridge, iptables chains, mounts, cgroups; restore sysctls
	@$(PY) hack/localcluster.py down

cluster-images: ## build (cached) and import the operator and room-price v1..v4 images into the running cluster's node
	@$(PY) hack/localcluster.py images

cluster-status: ## show the local cluster's processes and the health of both nodes
	@$(PY) hack/localcluster.py status

demo: setup ## the main job on a real node: images built, operator by Helm, v1 Ready, faulty v2 rolled back, v3 promoted (KEEP=1 leaves it up)
	@$(PY) hack/demo.py

kind-demo: setup ## the same story on kind: node image (kind's, or assembled here), kind load, helm install, in-cluster Prometheus (KEEP=1 leaves it up)
	@$(PY) hack/kinddemo.py

kind-up: setup ## a kind cluster (starts dockerd with guards when no engine runs); prints KUBECONFIG
	@$(PY) hack/kindcluster.py up

kind-down: ## delete the kind cluster, its network and route; stop the dockerd we started, iptables and sysctls put back
	@$(PY) hack/kindcluster.py down

kind-node-image: setup ## build (or find cached) the kind node image assembled from our binaries
	@$(PY) hack/kindnode.py build

test-kind: setup ## the kind tier only: smoke test on a kind cluster (own pytest session)
	$(PY) -m pytest -q tests/kind

bench-serving: setup ## benchmark: served model throughput/latency vs another model server
	$(PY) -m modeldeploy_model.bench_serving

bench-canary: setup ## benchmark: fault onset -> canary weight 0, fast and slow settings (bench/results/canary.json)
	$(PY) tests/benchmarks/bench_canary.py

bench-baseline: setup ## benchmark: baseline checks (drift, 80 % failing, stable-wide incident, healthy): evidence and time to decide (bench/results/baseline.json)
	$(PY) tests/benchmarks/bench_baseline.py

bench-peers: setup ## benchmark (root, real node): modeldeploy vs Flagger vs Argo Rollouts, same fault and load (bench/results/peers.json; BENCH_RUNS=1 for a quick run, BENCH_APPEND=1 adds rounds)
	$(PY) hack/images.py build bento
	$(PY) tests/benchmarks/bench_peers.py

traefik-up: ## Traefik as the Gateway API data plane beside a running `make cluster-up` (GatewayClass, Gateway on 127.0.0.1)
	@$(PY) hack/traefik.py up

traefik-down: ## stop what traefik-up started
	@$(PY) hack/traefik.py down

bench-operator: setup ## benchmark: N=100/500 ModelDeployments to Ready vs plain Deployments (+ Services), RSS/CPU with 5,000+5,000 unrelated objects (bench/results/operator.json; BENCH_SIZES, BENCH_UNRELATED=0, BENCH_PROFILE=1: py-spy)
	$(PY) tests/benchmarks/bench_operator.py

chart-lint: ## helm lint the chart and check the generated copies (CRD, kustomize install, argocd-cm) are in sync
	$(VENV)/bin/helm lint --strict charts/modeldeploy -f charts/modeldeploy/ci/full-values.yaml
	hack/sync-chart-crd.sh --check

crd: ## regenerate crds/ from operator/modeldeploy/api.py, then the chart/kustomize/argocd copies
	$(PY) -m modeldeploy.crd > crds/modeldeploy.io_modeldeployments.yaml
	hack/sync-chart-crd.sh

image: setup ## build the operator image from operator/Dockerfile with buildah (no daemon, no registry; cached)
	@$(PY) hack/images.py build operator

images: setup ## build every image the node runs: pause, base, operator, model v1..v4 (cached by their inputs)
	@$(PY) hack/images.py build all

test-e2e: setup ## the real-node tier only: images on a kubelet, operator installed by Helm, real traffic
	$(PY) -m pytest -q tests/e2e

clean: cluster-down ## remove local state (not the venv or the binary cache)
	rm -rf .local
