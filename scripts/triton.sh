#!/usr/bin/env bash
# Run the real Triton Inference Server (from the nvidia-pytriton wheel, CPU, python backend)
# in the foreground, serving model_repository/. Made for a process supervisor (honcho):
# it `exec`s tritonserver, logs to stdout, and SIGTERM stops it cleanly (in-flight requests
# get PRECIS_TRITON_EXIT_TIMEOUT_S seconds).
#
#   scripts/triton.sh [extra tritonserver args...]
#
# Env (defaults):
#   PRECIS_TRITON_HTTP_PORT=8000  PRECIS_TRITON_GRPC_PORT=8001  PRECIS_TRITON_METRICS_PORT=8002
#   PRECIS_TRITON_MODEL_REPOSITORY=<repo>/model_repository
#   PRECIS_TRITON_LOG_VERBOSE=0   PRECIS_TRITON_EXIT_TIMEOUT_S=10
#   PRECIS_TRITON_MODEL_CONFIG_NAME=   (empty: summarizer/config.pbtxt; `realtime` / `batch`:
#       summarizer/configs/<name>.pbtxt through --model-config-name; `make run` starts one of each)
#   PRECIS_TRITON_CPU_PRIORITY=normal  normal | nice (nice 19) | idle (SCHED_IDLE, `chrt -i 0`):
#       the CPU priority of the server and of everything it starts (the python backend stubs, where
#       the model runs, inherit it). `make run` runs the batch server at idle: on shared cores it
#       only gets the cycles the realtime path leaves (docs/architecture.md, bench/local_split_bench.py)
#   PRECIS_VENV=$PRECIS_CACHE/venv (PRECIS_CACHE: scripts/cache.sh)
#   Model settings: PRECIS_MODEL_PATH, PRECIS_MODEL_DEVICE, PRECIS_MODEL_DTYPE, ... (see
#   model_repository/summarizer/1/summarizer_engine/config.py); they reach model.py through the env.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/triton_env.sh
source "$ROOT/scripts/triton_env.sh"

HTTP_PORT="${PRECIS_TRITON_HTTP_PORT:-8000}"
GRPC_PORT="${PRECIS_TRITON_GRPC_PORT:-8001}"
METRICS_PORT="${PRECIS_TRITON_METRICS_PORT:-8002}"
MODEL_REPOSITORY="${PRECIS_TRITON_MODEL_REPOSITORY:-$ROOT/model_repository}"

# Python-backend shared-memory regions are named by prefix: make it unique per server so a
# test server and a `make run` server can coexist on one machine.
SHM_PREFIX="precis_triton_${GRPC_PORT}_"

CONFIG_NAME="${PRECIS_TRITON_MODEL_CONFIG_NAME:-}"
config_args=()
if [[ -n "$CONFIG_NAME" ]]; then
  if [[ ! -f "$MODEL_REPOSITORY/summarizer/configs/$CONFIG_NAME.pbtxt" ]]; then
    echo "[triton.sh] no model config $MODEL_REPOSITORY/summarizer/configs/$CONFIG_NAME.pbtxt" >&2
    exit 2
  fi
  config_args=(--model-config-name="$CONFIG_NAME")
fi
case "${PRECIS_TRITON_CPU_PRIORITY:-normal}" in
  normal) prio=() ;;
  nice) prio=(nice -n 19) ;;
  idle) prio=(chrt --idle 0) ;;
  *) echo "[triton.sh] PRECIS_TRITON_CPU_PRIORITY must be normal, nice or idle" >&2; exit 2 ;;
esac

echo "[triton.sh] $TRITON_BIN http=$HTTP_PORT grpc=$GRPC_PORT metrics=$METRICS_PORT repo=$MODEL_REPOSITORY config=${CONFIG_NAME:-config.pbtxt} priority=${PRECIS_TRITON_CPU_PRIORITY:-normal} venv=$PRECIS_VENV"
# nice/chrt exec the server in turn: the supervisor's pid is still tritonserver's.
exec "${prio[@]}" "$TRITON_BIN" \
  --model-repository="$MODEL_REPOSITORY" \
  --backend-directory="$TRITON_BACKEND_DIR" \
  --backend-config="python,shm-region-prefix-name=$SHM_PREFIX" \
  --model-control-mode="${PRECIS_TRITON_MODEL_CONTROL:-none}" ${PRECIS_TRITON_MODEL_CONTROL:+--load-model=summarizer} \
  --strict-readiness=true \
  --exit-on-error=true \
  --http-port="$HTTP_PORT" \
  --grpc-port="$GRPC_PORT" \
  --metrics-port="$METRICS_PORT" \
  --allow-metrics=true \
  --allow-cpu-metrics=true \
  --exit-timeout-secs="${PRECIS_TRITON_EXIT_TIMEOUT_S:-10}" \
  --log-verbose="${PRECIS_TRITON_LOG_VERBOSE:-0}" \
  --log-info=true \
  "${config_args[@]}" \
  "$@"
