# Shared settings for scripts/images/*.sh (sourced, not run).
#
# Storage: buildah and podman both use the `vfs` driver (no overlay/fuse on this machine) in the
# default root store, so podman sees what buildah built. podman runs containers with runc (crun
# fails here: "cgroups in hybrid mode not supported") and explicit rlimits (the defaults fail with
# "error setting rlimit type 7").
PRECIS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$PRECIS_ROOT/scripts/cache.sh"
PRECIS_VENV="${PRECIS_VENV:-$PRECIS_CACHE/venv}"
PY="${PY:-$PRECIS_VENV/bin/python}"
IMAGES_DIR="$PRECIS_CACHE/images"
APP_VERSION="${APP_VERSION:-0.1.0}"
REGISTRY_PREFIX="${REGISTRY_PREFIX:-localhost/precis}"
ALL_IMAGES=(service triton-cpu kafka postgres smtp-sink redis)
mkdir -p "$IMAGES_DIR"

bah() { buildah --storage-driver vfs "$@"; }
pod() { podman --storage-driver vfs --runtime runc --cgroup-manager cgroupfs --events-backend file "$@"; }
# Every container the smoke tests start gets these (see above).
POD_LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

ilog() { printf '\033[1m[images]\033[0m %s\n' "$*" >&2; }
die() { ilog "ERROR: $*"; exit 1; }

# sha256 over file contents + relative names (stable order), for inputs hashes.
hash_paths() {
  local p
  for p in "$@"; do
    if [[ -d "$p" ]]; then
      (cd "$p" && find . -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z \
        | xargs -0 -r sha256sum) | sed "s|  \./|  $p/|"
    elif [[ -f "$p" ]]; then
      sha256sum "$p"
    else
      echo "missing $p"
    fi
  done | sha256sum | cut -d' ' -f1
}

image_id() { bah inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null; }
