#!/usr/bin/env bash
# Build the local control plane's binaries from their upstream Go modules, into a versioned
# cache outside the repo (~/.cache/modeldeploy/bin/<versions>), skipping what is already built.
# Why from source: the machines reach only package registries (the Go module proxy among them),
# never release download sites. Why a wrapper module: see hack/k8s/go.mod.
set -euo pipefail
cd "$(dirname "$0")"
source ./versions.env

BIN="${MODELDEPLOY_BIN:-$HOME/.cache/modeldeploy/bin/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-kwok-${KWOK_VERSION}-helm-${HELM_VERSION}-crictl-${CRICTL_VERSION}}"
# Tools added since carry their version in the file name instead (a new one keeps the directory).
mkdir -p "$BIN"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
# Keep parallelism modest: 2 cores and the linker of kube-apiserver is memory hungry.
export GOMAXPROCS="${GOMAXPROCS:-2}"

log() { printf '[build-binaries] %s\n' "$*" >&2; }

build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
minor=$(echo "$K8S_VERSION" | cut -d. -f2)
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
  k8s_ldflags+=" -X $pkg.gitCommit=0000000000000000000000000000000000000000 -X $pkg.gitTreeState=clean -X $pkg.buildDate=${build_date}"
done

# kubelet and kube-proxy run the real local node (hack/localnode.py) beside the control plane;
# kubeadm (with them) goes into the kind node image assembled by hack/kindnode.py.
for c in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy kubeadm; do
  if [[ ! -x "$BIN/$c" ]]; then
    log "building $c ${K8S_VERSION} (cold: several minutes)"
    (cd k8s && go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "$k8s_ldflags" -o "$BIN/$c.tmp" "./cmd/$c")
    mv "$BIN/$c.tmp" "$BIN/$c"
  fi
done

if [[ ! -x "$BIN/etcd" ]]; then
  log "building etcd ${ETCD_VERSION}"
  (cd etcd && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" .)
  mv "$BIN/etcd.tmp" "$BIN/etcd"
fi

# `go install PKG@VERSION` into $1 (the binary is named after PKG's last path element), stripped.
go_install_to() {
  local dest=$1 pkg=$2 name tmp="$BIN/.install.$$"
  shift 2
  name=${pkg%@*}; name=${name##*/}
  GOBIN="$tmp" go install -trimpath -ldflags "-s -w" "$@" "$pkg"
  mv "$tmp/$name" "$dest"; rmdir "$tmp"
}

if [[ ! -x "$BIN/kwok" ]]; then
  log "building kwok ${KWOK_VERSION}"
  go_install_to "$BIN/kwok" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
fi

if [[ ! -x "$BIN/crictl" ]]; then
  # Not packaged in Debian 12; the node's teardown removes pods through the CRI with it.
  log "building crictl ${CRICTL_VERSION}"
  go_install_to "$BIN/crictl" "sigs.k8s.io/cri-tools/cmd/crictl@${CRICTL_VERSION}"
fi

PROM="$BIN/prometheus-${PROMETHEUS_VERSION}"
if [[ ! -x "$PROM" ]]; then
  # Debian's prometheus (2.42) is built without Kubernetes service discovery; the real-node tier
  # and the demo discover pods with kubernetes_sd_configs, so build it with only that provider.
  v=${PROMETHEUS_VERSION#v0.}; mm=${v%%.*}; prom_release="${mm:0:1}.${mm:1}.${v#*.}"  # v0.316.0 -> 3.16.0
  log "building prometheus ${prom_release} (${PROMETHEUS_VERSION}; Kubernetes service discovery only)"
  GOBIN="$BIN/.prometheus" go install -trimpath -tags "remove_all_sd,enable_kubernetes_sd" -ldflags "-s -w \
    -X github.com/prometheus/common/version.Version=${prom_release}" \
    "github.com/prometheus/prometheus/cmd/prometheus@${PROMETHEUS_VERSION}"
  mv "$BIN/.prometheus/prometheus" "$PROM"; rmdir "$BIN/.prometheus"
fi

if [[ ! -x "$BIN/helm" ]]; then
  log "building helm ${HELM_VERSION}"
  hminor=$(echo "$K8S_VERSION" | cut -d. -f2)
  GOBIN="$BIN/.helm" go install -trimpath -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${hminor}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  mv "$BIN/.helm/helm" "$BIN/helm"; rmdir "$BIN/.helm"
fi

# Upstream Gateway API and Istio CRDs, for the traffic-router tests: the modules carry them.
if [[ ! -f "$BIN/crds/gateway-api-${GATEWAY_API_VERSION}.yaml" || ! -f "$BIN/crds/istio-${ISTIO_API_VERSION}.yaml" ]]; then
  log "fetching Gateway API ${GATEWAY_API_VERSION} and Istio ${ISTIO_API_VERSION} CRDs from the Go module proxy"
  mkdir -p "$BIN/crds"
  gw=$(go mod download -json "sigs.k8s.io/gateway-api@${GATEWAY_API_VERSION}" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  for f in "$gw"/config/crd/standard/gateway.networking.k8s.io_{gatewayclasses,gateways,httproutes,referencegrants}.yaml; do
    cat "$f"; echo "---"
  done > "$BIN/crds/gateway-api-${GATEWAY_API_VERSION}.yaml"
  is=$(go mod download -json "istio.io/api@${ISTIO_API_VERSION}" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  cp "$is/kubernetes/customresourcedefinitions.gen.yaml" "$BIN/crds/istio-${ISTIO_API_VERSION}.yaml"
  chmod u+w "$BIN/crds/"*.yaml
fi

# The kind tier: the kind CLI itself, and CoreDNS for the node image hack/kindnode.py assembles
# (kindest/node cannot be pulled here, and `kind build node-image` needs a registry).
if [[ ! -x "$BIN/kind-${KIND_VERSION}" ]]; then
  log "building kind ${KIND_VERSION}"
  go_install_to "$BIN/kind-${KIND_VERSION}" "sigs.k8s.io/kind@${KIND_VERSION}"
fi
if [[ ! -x "$BIN/coredns-${COREDNS_VERSION}" ]]; then
  log "building coredns ${COREDNS_VERSION} (cold: ~3 min)"
  go_install_to "$BIN/coredns-${COREDNS_VERSION}" "github.com/coredns/coredns@${COREDNS_VERSION}"
fi
ln -sf "kind-${KIND_VERSION}" "$BIN/kind"

# The peers (issue 14) and a real Gateway API data plane, for tests/benchmarks/bench_peers.py.
# `go build PKG` inside the wrapper module hack/gomod/$1 into $2; the caller keys $2 by the
# wrapper's go.mod and go.sum (see gomod_key), so editing the wrapper rebuilds and a warm call skips.
gomod_key() { cat "gomod/$1/go.mod" "gomod/$1/go.sum" | sha256sum | cut -c1-12; }
gomod_build_to() {
  local mod=$1 dest=$2 pkg=$3
  shift 3
  (cd "gomod/$mod" && go build -trimpath -ldflags "-s -w $*" -o "$dest.tmp" "$pkg")
  mv "$dest.tmp" "$dest"
}
timed() { local t=$(date +%s); "$@"; log "  built in $(( $(date +%s) - t ))s"; }
TRAEFIK="$BIN/traefik-${TRAEFIK_VERSION}-$(gomod_key traefik)"
if [[ ! -x "$TRAEFIK" ]]; then
  log "building traefik ${TRAEFIK_VERSION} (wrapper module hack/gomod/traefik; cold: ~7 min)"
  timed gomod_build_to traefik "$TRAEFIK" github.com/traefik/traefik/v3/cmd/traefik \
    "-X github.com/traefik/traefik/v3/pkg/version.Version=${TRAEFIK_VERSION#v}"
fi
if [[ ! -x "$BIN/flagger-${FLAGGER_VERSION}" ]]; then
  log "building flagger ${FLAGGER_VERSION} (cold: ~3 min)"
  timed go_install_to "$BIN/flagger-${FLAGGER_VERSION}" "github.com/fluxcd/flagger/cmd/flagger@${FLAGGER_VERSION}"
fi
ARGO="$BIN/rollouts-controller-${ARGO_ROLLOUTS_VERSION}-$(gomod_key argo-rollouts)"
if [[ ! -x "$ARGO" ]]; then
  log "building argo rollouts ${ARGO_ROLLOUTS_VERSION} (wrapper module hack/gomod/argo-rollouts; cold: ~4 min)"
  timed gomod_build_to argo-rollouts "$ARGO" github.com/argoproj/argo-rollouts/cmd/rollouts-controller \
    "-X github.com/argoproj/argo-rollouts/utils/version.version=${ARGO_ROLLOUTS_VERSION}" \
    "-X github.com/argoproj/argo-rollouts/utils/version.buildDate=${build_date}"
fi
ln -sf "${TRAEFIK##*/}" "$BIN/traefik"
ln -sf "flagger-${FLAGGER_VERSION}" "$BIN/flagger"
ln -sf "${ARGO##*/}" "$BIN/rollouts-controller"

ln -sf "prometheus-${PROMETHEUS_VERSION}" "$BIN/prometheus"
echo "$BIN"
