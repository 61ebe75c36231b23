#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` once, into the cache ($PRECIS_CACHE/bin/llama-server).
# It is the honest peer of `make bench-realtime`: it batches continuously across parallel slots,
# where llama-cpp-python's server answers one request at a time.
#
# The sources are the llama.cpp that the llama-cpp-python sdist vendors, at the version
# pyproject.toml pins. The cmake flags are that wheel's defaults (native CPU), so the peer runs
# the same kernels as our engine in the venv. Only the package registry is reachable here, so
# the sdist is the one source of llama.cpp's code.
#
#   scripts/build_llama_server.sh      # ~6 min on 2 idle cores; a no-op once built
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/cache.sh
source "$ROOT/scripts/cache.sh"
PY="${PRECIS_VENV:-$PRECIS_CACHE/venv}/bin/python"

ver="$(grep -oE '"llama-cpp-python==[^"]+"' "$ROOT/pyproject.toml" | head -1 | tr -d '"' | cut -d= -f3)"
[ -n "$ver" ] || { echo "[llama-server] no llama-cpp-python pin in pyproject.toml" >&2; exit 1; }
out="$PRECIS_CACHE/bin/llama-server"
work="$PRECIS_CACHE/llama-server/$ver"
stamp="$work/.built"
if [ -x "$out" ] && [ -f "$stamp" ]; then
  echo "[llama-server] $ver up to date: $out"
  exit 0
fi
mkdir -p "$work" "$PRECIS_CACHE/bin"
start=$(date +%s)
if ! ls "$work"/llama_cpp_python-"$ver".tar.gz >/dev/null 2>&1; then
  # The sdist's URL and digest from the index's JSON simple API (PEP 691): `pip download` of an
  # sdist would first build its metadata (scikit-build-core and cmake, from source under
  # --no-binary), and this workplace's proxy serves the simple index, not /pypi/<name>/json.
  "$PY" - "$ver" "$work" <<'PYEOF'
import hashlib, json, sys, urllib.request
ver, work = sys.argv[1], sys.argv[2]
name = f"llama_cpp_python-{ver}.tar.gz"
req = urllib.request.Request(
    "https://pypi.org/simple/llama-cpp-python/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
)
sdist = next(f for f in json.load(urllib.request.urlopen(req, timeout=60))["files"] if f["filename"] == name)
data = urllib.request.urlopen(sdist["url"], timeout=600).read()
if hashlib.sha256(data).hexdigest() != sdist["hashes"]["sha256"]:
    sys.exit(f"sha256 mismatch for {sdist['filename']}")
open(f"{work}/llama_cpp_python-{ver}.tar.gz", "wb").write(data)
print(f"[llama-server] downloaded {name} ({len(data) // 1024} KiB, sha256 ok)")
PYEOF
fi
rm -rf "$work/src" && mkdir -p "$work/src"
tar -xzf "$work"/llama_cpp_python-"$ver".tar.gz -C "$work/src" --strip-components=1
cmake -S "$work/src/vendor/llama.cpp" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$work/build" --target llama-server -j"$(nproc)" 2>&1 \
  | grep --line-buffered -E '^\[ *[0-9]+%\]|error' || true
install -m 0755 "$work/build/bin/llama-server" "$out"
rm -rf "$work/src"  # the build tree stays: a rebuild after a flag change is incremental
touch "$stamp"
echo "[llama-server] built $ver in $(( $(date +%s) - start ))s: $out"
