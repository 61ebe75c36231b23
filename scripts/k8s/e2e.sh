#!/usr/bin/env bash
# `make k8s-e2e`: the chart on a real Kubernetes, end to end (deploy/k8s_e2e.py says what is tested).
#   - KUBECONFIG unset: the local cluster of scripts/k8s (built/started here, stopped at the end
#     unless PRECIS_E2E_KEEP=1), with the images of `make images` loaded into its containerd;
#   - KUBECONFIG set: that cluster (kind, minikube, a real one); the images of `make images` must
#     already be on its nodes (e.g. `kind load image-archive $PRECIS_CACHE/images/service.tar`).
# Figures go to bench/results/k8s-e2e.json.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
source "$ROOT/scripts/cache.sh"
PY="${PY:-$PRECIS_CACHE/venv/bin/python}"
extra="$(mktemp)"
trap 'rm -f "$extra"' EXIT
say() { printf '\033[1m[k8s-e2e]\033[0m %s\n' "$*" >&2; }

t0=$(date +%s.%N)
make --no-print-directory images
images_build_s=$(python3 -c "import sys; print(round($(date +%s.%N) - $t0, 1))")

local_cluster=0
if [ -z "${KUBECONFIG:-}" ]; then
  local_cluster=1
  export KUBECONFIG="$PRECIS_CACHE/k8s/kubeconfig"
  export KUBECTL="$PRECIS_CACHE/k8s/bin/kubectl"
  if [ -s "$KUBECONFIG" ] && "$KUBECTL" --request-timeout=5s get --raw /readyz >/dev/null 2>&1; then
    say "the local cluster is already up: using it (and leaving it up)"
    cluster_up_s=null
  else
    if [ "${PRECIS_E2E_KEEP:-0}" != 1 ]; then
      trap 'rm -f "$extra"; say "stopping the local cluster (PRECIS_E2E_KEEP=1 keeps it)"; make --no-print-directory k8s-down || true' EXIT
    fi
    make --no-print-directory k8s-up
    cluster_up_s=$(python3 -c "import json; print(json.load(open('$PRECIS_CACHE/k8s/run/up.json'))['cluster_up_s'])")
  fi
  make --no-print-directory k8s-load-images
else
  export KUBECTL="${KUBECTL:-kubectl}"
  cluster_up_s=null
fi
echo "{\"images_build_s\": $images_build_s, \"cluster_up_s\": $cluster_up_s, \"local_cluster\": $local_cluster}" > "$extra"
say "images ${images_build_s}s, cluster up ${cluster_up_s}s; KUBECONFIG=$KUBECONFIG"

# Custom resources (Strimzi, KEDA, Prometheus Operator) by a server-side dry run with their CRDs
# installed; it also leaves the CRDs in place for the GPU profile's install below.
if [ -f scripts/k8s/crds.sh ]; then
  make --no-print-directory k8s-dry-run
fi
"$PY" deploy/k8s_e2e.py --extra "$extra" "$@"
