#!/usr/bin/env bash
# Build the real `helm` CLI from the Go module proxy into the cache (outside the clone).
#
#   scripts/install_helm.sh            # builds only if missing or the wrong version
#   HELM_VERSION=v3.20.2 scripts/install_helm.sh
#
# Result: $PRECIS_CACHE/bin/helm (default: scripts/cache.sh)
# No Docker, no curl|sh: `go install helm.sh/helm/v3/cmd/helm@<version>` through GOPROXY.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.19.0}"
source "$(dirname "${BASH_SOURCE[0]}")/cache.sh"
BIN_DIR="${PRECIS_CACHE}/bin"
HELM="${BIN_DIR}/helm"
STAMP="${BIN_DIR}/helm.buildinfo"

log() { printf '[install_helm] %s\n' "$*" >&2; }

# The stamp records how the binary was built (version + default Kubernetes version); a binary
# built some other way (e.g. without the ldflags below) is rebuilt.
want_stamp="helm=${HELM_VERSION} build=2"
if [[ -x "${HELM}" ]]; then
  have="$("${HELM}" version --template '{{.Version}}' 2>/dev/null || true)"
  if [[ "${have}" == "${HELM_VERSION}" && "$(cat "${STAMP}" 2>/dev/null)" == "${want_stamp}" ]]; then
    log "helm ${have} already at ${HELM}"
    exit 0
  fi
  log "found helm '${have:-unknown}' at ${HELM} (stamp '$(cat "${STAMP}" 2>/dev/null)'), want ${want_stamp}: rebuilding"
fi

if ! command -v go >/dev/null 2>&1; then
  log "ERROR: 'go' not found on PATH; install Go >= 1.24 to build helm"
  exit 2
fi

mkdir -p "${BIN_DIR}"
log "building helm.sh/helm/v3/cmd/helm@${HELM_VERSION} with $(go version | awk '{print $3}')"
log "GOPROXY=$(go env GOPROXY) GOBIN=${BIN_DIR} (first build takes a few minutes on 2 cores)"
start=$(date +%s)
# Same ldflags as helm's own Makefile: the version, and the default Kubernetes version used by
# `helm template`/`helm lint` (otherwise it is v1.20 and kubeVersion constraints fail). The
# Kubernetes minor is the one of the client-go that this helm release is built against.
log "resolving helm.sh/helm/v3@${HELM_VERSION} from the module proxy"
gomod="$(go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
k8s_minor="$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "${gomod}" | head -n1)"
if [[ -z "${k8s_minor}" ]]; then
  log "WARNING: could not read client-go's version from ${gomod}; assuming Kubernetes 1.33"
  k8s_minor=33
fi
log "default Kubernetes version for helm template/lint: v1.${k8s_minor}.0"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  ldflags+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${k8s_minor}"
done
# Build into a temp name, then move, so a killed build never leaves a half-written binary.
tmpbin="$(mktemp -d)"
trap 'rm -rf "${tmpbin}"' EXIT
GOBIN="${tmpbin}" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}" \
  go install -ldflags "${ldflags}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
mv -f "${tmpbin}/helm" "${HELM}"
printf '%s\n' "${want_stamp}" > "${STAMP}"
log "built in $(( $(date +%s) - start ))s: $("${HELM}" version --short 2>/dev/null || echo '?')"
log "helm is at ${HELM}"
