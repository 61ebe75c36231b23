#!/usr/bin/env bash
# Build the *portable* llama-cpp-python wheel once, into ${PRECIS_CACHE}/wheels-portable.
#
# Why a separate wheel: `make install` builds llama-cpp-python with -march=native for this
# machine's venv; an image must run on any x86-64 node with AVX2, so the image gets a build with
# GGML_NATIVE=OFF and an explicit AVX2/FMA/F16C baseline. Compiling llama.cpp takes ~15 min on
# 2 cores, so it is built here once (outside any image layer) and handed to the triton-cpu build
# as a wheels context (pip --find-links); unchanged inputs never rebuild it. Where the directory
# is empty, the Dockerfile's pip builds the same thing from the PyPI sdist with the same flags.
#
# The wheel is built with this machine's Python 3.11 and glibc (Debian bookworm), which is
# exactly what both image bases (Debian bookworm python3 / python:3.11-slim-bookworm) have.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../cache.sh"
PY="${PY:-$PRECIS_CACHE/venv/bin/python}"
LLAMA_CPP_VERSION="${LLAMA_CPP_VERSION:-0.3.16}"
# Keep in sync with docker/triton-cpu.Dockerfile (ENV CMAKE_ARGS) and docker/triton.Dockerfile.
PORTABLE_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"
out="$PRECIS_CACHE/wheels-portable"
stamp="$out/.llama-cpp-python-$LLAMA_CPP_VERSION.$(printf '%s' "$PORTABLE_CMAKE_ARGS" | sha256sum | cut -c1-12).done"
if [[ -f "$stamp" ]] && ls "$out"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl >/dev/null 2>&1; then
  exit 0
fi
mkdir -p "$out"
echo "[images] building portable llama-cpp-python $LLAMA_CPP_VERSION wheel into $out (once, ~15 min on 2 cores)" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
t0=$(date +%s)
# PIP_FIND_LINKS may point at a local wheel dir holding the -march=native build of the same
# version: --no-binary forces the sdist, so the native wheel can never be picked up by mistake.
CMAKE_ARGS="$PORTABLE_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" PIP_FIND_LINKS="" \
  nice -n 10 "$PY" -m pip wheel --no-deps --no-binary llama-cpp-python --no-cache-dir \
  -w "$tmp" "llama-cpp-python==$LLAMA_CPP_VERSION"
rm -f "$out"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl
mv "$tmp"/llama_cpp_python-*.whl "$out/"
rm -f "$out"/.llama-cpp-python-*.done
touch "$stamp"
echo "[images] portable wheel built in $(( $(date +%s) - t0 ))s: $(ls "$out"/*.whl)" >&2
