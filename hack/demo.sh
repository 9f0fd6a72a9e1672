#!/usr/bin/env bash
# `make demo`: the main job on a fresh machine — a real local control plane, the CRD, the
# operator, and an example ModelDeployment reaching Ready with its children.
# KEEP=1 leaves everything running and prints how to stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
PY=.venv/bin/python
STATE=.local/demo
mkdir -p "$STATE"
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

cleanup() {
  if [[ "${KEEP:-0}" == "1" ]]; then
    say "left running. Stop with: make cluster-down; kill \$(cat $STATE/operator.pid)"
    return
  fi
  say "stopping everything the demo started"
  [[ -f $STATE/operator.pid ]] && kill "$(cat $STATE/operator.pid)" 2>/dev/null || true
  $PY hack/localcluster.py down >/dev/null
}
trap cleanup EXIT

say "starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
$PY hack/localcluster.py up | tail -n 3
export KUBECONFIG=$PWD/.local/cluster/kubeconfig
kubectl get nodes -o wide
say "cluster is up; components:"
kubectl get --raw='/readyz?verbose' | tail -n 3
