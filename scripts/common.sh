# Shared shell settings for the project's scripts (sourced, not run).
# Everything big lives in PRECIS_CACHE (outside the clone) so clones and CI runs reuse it.
PRECIS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$PRECIS_ROOT/scripts/cache.sh"
export PRECIS_VENV="${PRECIS_VENV:-$PRECIS_CACHE/venv}"
export PRECIS_VAR_DIR="${PRECIS_VAR_DIR:-$PRECIS_ROOT/var}"
export KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
export KAFKA_LIBS="$PRECIS_CACHE/kafka-$KAFKA_VERSION/libs"
PY="$PRECIS_VENV/bin/python"
export PYTHONPATH="$PRECIS_ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# Ports: each PRECIS_*_PORT already set wins (devstack/ allocates them for tests and benches);
# otherwise the defaults of docs/architecture.md, shifted by PRECIS_PORT_OFFSET (so a second
# `make run` can sit beside the first).
off="${PRECIS_PORT_OFFSET:-0}"
export PRECIS_GATEWAY_PORT="${PRECIS_GATEWAY_PORT:-$((8080 + off))}" PRECIS_REALTIME_PORT="${PRECIS_REALTIME_PORT:-$((8081 + off))}"
export PRECIS_ASYNC_PORT="${PRECIS_ASYNC_PORT:-$((8082 + off))}" PRECIS_WORKER_PORT="${PRECIS_WORKER_PORT:-$((8083 + off))}"
export PRECIS_NOTIFIER_PORT="${PRECIS_NOTIFIER_PORT:-$((8084 + off))}"
export PRECIS_TRITON_HTTP_PORT="${PRECIS_TRITON_HTTP_PORT:-$((8000 + off))}" PRECIS_TRITON_GRPC_PORT="${PRECIS_TRITON_GRPC_PORT:-$((8001 + off))}"
export PRECIS_TRITON_METRICS_PORT="${PRECIS_TRITON_METRICS_PORT:-$((8002 + off))}"
# the batch Triton (the worker's): its own server and model config beside the realtime one above
export PRECIS_BATCH_TRITON_HTTP_PORT="${PRECIS_BATCH_TRITON_HTTP_PORT:-$((8010 + off))}" PRECIS_BATCH_TRITON_GRPC_PORT="${PRECIS_BATCH_TRITON_GRPC_PORT:-$((8011 + off))}"
export PRECIS_BATCH_TRITON_METRICS_PORT="${PRECIS_BATCH_TRITON_METRICS_PORT:-$((8012 + off))}"
export PRECIS_KAFKA_PORT="${PRECIS_KAFKA_PORT:-$((9092 + off))}" PRECIS_KAFKA_CONTROLLER_PORT="${PRECIS_KAFKA_CONTROLLER_PORT:-$((9093 + off))}"
export PRECIS_SMTP_PORT="${PRECIS_SMTP_PORT:-$((1025 + off))}"
export PRECIS_REDIS_PORT="${PRECIS_REDIS_PORT:-$((6379 + off))}"
export PRECIS_KAFKA_BOOTSTRAP_SERVERS="${PRECIS_KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$PRECIS_KAFKA_PORT}"
export PRECIS_TRITON_GRPC_URL="${PRECIS_TRITON_GRPC_URL:-127.0.0.1:$PRECIS_TRITON_GRPC_PORT}"
export PRECIS_BATCH_TRITON_GRPC_URL="${PRECIS_BATCH_TRITON_GRPC_URL:-127.0.0.1:$PRECIS_BATCH_TRITON_GRPC_PORT}"
export PRECIS_REALTIME_URL="${PRECIS_REALTIME_URL:-http://127.0.0.1:$PRECIS_REALTIME_PORT}"
export PRECIS_ASYNC_URL="${PRECIS_ASYNC_URL:-http://127.0.0.1:$PRECIS_ASYNC_PORT}"
export PRECIS_SMTP_HOST="${PRECIS_SMTP_HOST:-127.0.0.1}"

log() { printf '\033[1m[precis]\033[0m %s\n' "$*" >&2; }
