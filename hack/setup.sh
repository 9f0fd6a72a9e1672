#!/usr/bin/env bash
# `make setup`: everything the tests and the demo need, on a fresh Debian machine, idempotent.
#   1. Debian packages (prometheus, lua5.1, openssl; containerd, runc, CNI plugins, iptables for the
#      real node; debootstrap, buildah, gcc for the images) — apt-get update first, only when one is missing.
#   2. The Python venv in .venv with the package and its dev+ml extras (skipped when pyproject is unchanged).
#   3. The control-plane binaries, built from the upstream Go modules into ~/.cache (hack/build-binaries.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[setup] %s\n' "$*" >&2; }
t0=$(date +%s)

APT_PACKAGES=(prometheus lua5.1 openssl wrk curl
  # images without a registry (hack/images.py): a Debian base, buildah builds, the static pause binary, containerd to import into
  debootstrap buildah skopeo containerd runc gcc libc6-dev)
# The real node (hack/localnode.py, hack/localnet.py): CNI plugins, iptables, mount tools.
APT_PACKAGES+=(containernetworking-plugins iptables conntrack iproute2 util-linux)
# The kind tier (hack/localdocker.py, hack/kindnode.py): Debian's Docker engine (20.10), started by hand only
# when no engine runs; the node image is assembled from debootstrap (above) and our binaries.
APT_PACKAGES+=(docker.io)
# The pipeline report's rendered-page test (tests/model/test_model_report.py) opens it in headless Chromium.
APT_PACKAGES+=(chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  log "installing Debian packages: ${missing[*]}"
  # Debian's prometheus package would start a system-wide server listening on every interface;
  # forbid service starts during the install (we run our own Prometheus on loopback per test).
  created_policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d; created_policy=1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [[ -n "$created_policy" ]] && $SUDO rm -f /usr/sbin/policy-rc.d
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.modeldeploy-installed
want=$(sha256sum < pyproject.toml | cut -c1-16)
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  log "installing modeldeploy[dev,ml] into .venv (cold: ~2-3 min, TensorFlow is ~600 MB)"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev,ml]'
  echo "$want" > "$stamp"
fi

BIN=$(hack/build-binaries.sh)
# kubectl and helm of the pinned versions on the venv's PATH.
ln -sf "$BIN/kubectl" .venv/bin/kubectl
ln -sf "$BIN/helm" .venv/bin/helm
log "done in $(( $(date +%s) - t0 ))s; binaries in $BIN"
