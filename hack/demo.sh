#!/usr/bin/env bash
# `make demo`: the main job on a fresh machine — a real local control plane, the CRD, the
# operator, and an example ModelDeployment reaching Ready with its children.
# KEEP=1 leaves everything running and prints how to stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
PY=$PWD/.venv/bin/python
STATE=$PWD/.local/demo
mkdir -p "$STATE"
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) > deadline )); then echo "timed out waiting for $what" >&2; return 1; fi
    sleep 0.5
  done
}

cleanup() {
  local rc=$?
  if [[ "${KEEP:-0}" == "1" && $rc -eq 0 ]]; then
    say "left running: export KUBECONFIG=$KUBECONFIG"
    echo "stop with: kill \$(cat $STATE/operator.pid); make cluster-down"
    return
  fi
  say "stopping everything the demo started"
  if [[ -f $STATE/operator.pid ]]; then kill "$(cat "$STATE/operator.pid")" 2>/dev/null || true; rm -f "$STATE/operator.pid"; fi
  $PY hack/localcluster.py down >/dev/null
  (( rc == 0 )) || echo "demo failed (exit $rc); operator log: $STATE/operator.log" >&2
}
trap cleanup EXIT

say "1. local control plane: etcd, kube-apiserver, controller-manager, scheduler, kwok (all on 127.0.0.1)"
$PY hack/localcluster.py up | tail -n 2
export KUBECONFIG=$PWD/.local/cluster/kubeconfig
kubectl get nodes

say "2. install the ModelDeployment CRD"
kubectl apply --server-side -f crds/
kubectl wait --for=condition=Established crd/modeldeployments.modeldeploy.io --timeout=60s

say "3. start the operator (log: $STATE/operator.log)"
MODELDEPLOY_HTTP_ADDRESS=127.0.0.1:${DEMO_OPERATOR_PORT:-18080} MODELDEPLOY_RESYNC_SECONDS=10 \
  modeldeploy operator >"$STATE/operator.log" 2>&1 &
echo $! > "$STATE/operator.pid"
wait_for 60 "operator /readyz" curl -fsS "http://127.0.0.1:${DEMO_OPERATOR_PORT:-18080}/readyz"
echo "operator ready: metrics at http://127.0.0.1:${DEMO_OPERATOR_PORT:-18080}/metrics"

say "4. apply manifests/examples/minimal.yaml"
cat manifests/examples/minimal.yaml
kubectl apply -f manifests/examples/minimal.yaml
wait_for 120 "room-price Ready" kubectl wait --for=condition=Ready mdep/room-price --timeout=5s
kubectl get mdep,deploy,svc,hpa,pdb,pods

say "5. turn on autoscaling (HPA min 3, max 8): the operator creates the HPA and leaves replicas to it"
kubectl patch mdep room-price --type=merge -p '{"spec":{"replicas":null,"autoscaling":{"minReplicas":3,"maxReplicas":8}}}'
wait_for 120 "3 ready replicas" bash -c '[[ $(kubectl get mdep room-price -o jsonpath={.status.readyReplicas}) == 3 ]]'
kubectl get mdep,deploy,hpa,pods

say "6. a new model version (Rolling strategy for this step): the Deployment rolls to it"
kubectl patch mdep room-price --type=merge -p '{"spec":{"rollout":{"strategy":"Rolling"},"model":{"image":"registry.example/room-price:3e2d","bento":"room_price:3e2d"}}}'
wait_for 120 "stable at 3e2d" bash -c '[[ $(kubectl get mdep room-price -o jsonpath={.status.stable.bento}) == room_price:3e2d ]] && kubectl wait --for=condition=Ready mdep/room-price --timeout=2s'
kubectl get mdep room-price
kubectl get mdep room-price -o jsonpath='{range .status.history[*]}superseded: {.revision.bento} at {.time}{"\n"}{end}'

say "7. events the operator recorded"
kubectl get events --field-selector involvedObject.kind=ModelDeployment --sort-by=.lastTimestamp \
  -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message

say "8. a broken reference is reported, nothing running is touched"
kubectl patch mdep room-price --type=merge -p '{"spec":{"model":{"env":[{"name":"TOKEN","valueFrom":{"secretKeyRef":{"name":"missing-secret","key":"token"}}}]}}}'
wait_for 60 "Degraded" bash -c '[[ $(kubectl get mdep room-price -o jsonpath={.status.phase}) == Degraded ]]'
kubectl get mdep room-price -o jsonpath='{.status.phase}: {.status.message}{"\n"}'
kubectl get deploy room-price

say "demo complete"
