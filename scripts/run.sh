#!/usr/bin/env bash
# `make run`: install what is missing, migrate the store, start every component under honcho
# (each Procfile line kept alive by scripts/respawn.sh: restarted with backoff when it dies), wait
# for the gateway's and the worker's /readyz (the gateway's covers realtime_svc, async_svc and the
# realtime Triton; the worker's the batch Triton), print how to call it. Ctrl-C / SIGTERM stops
# everything.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$PRECIS_ROOT"
# The services have no default mode and refuse to start without one (common/settings.py): `make run`
# is a developer's machine, so local (dev API key, dev webhook secret, SQLite), unless the caller
# named a mode (devstack/'s stacks run with PRECIS_ENV=test).
export PRECIS_ENV="${PRECIS_ENV:-local}"
t0=$(date +%s)
[ "${PRECIS_SKIP_INSTALL:-0}" = 1 ] || scripts/bootstrap.sh
mkdir -p "$PRECIS_VAR_DIR"
"$PY" -m common.migrate
# The gateway signs its calls to realtime_svc/async_svc with this (common/internal_auth.py); honcho
# hands the same value to all three. A random one per run unless set (devstack sets its own).
PRECIS_INTERNAL_TOKEN_SECRET="${PRECIS_INTERNAL_TOKEN_SECRET:-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')}"
export PRECIS_INTERNAL_TOKEN_SECRET
export PRECIS_TOKENIZER_PATH="${PRECIS_TOKENIZER_PATH:-$PRECIS_CACHE/tokenizer/smollm2-135m-instruct.tokenizer.json}"

# The gateway's rate limits count in its own memory unless PRECIS_RATE_LIMIT_STORAGE_URI names a
# Redis; one on this machine's $PRECIS_REDIS_PORT (redis://127.0.0.1:6379/0 by default) is started
# here too (devstack/redis.py: loopback only, no persistence). `PRECIS_RATE_LIMIT_STORAGE_URI=redis`
# is short for that one.
procs=(kafka triton triton-batch smtp realtime async worker notifier gateway)
local_redis="redis://127.0.0.1:$PRECIS_REDIS_PORT/0"
[ "${PRECIS_RATE_LIMIT_STORAGE_URI:-}" = redis ] && export PRECIS_RATE_LIMIT_STORAGE_URI="$local_redis"
case "${PRECIS_RATE_LIMIT_STORAGE_URI:-}" in
  redis://127.0.0.1:"$PRECIS_REDIS_PORT"|redis://127.0.0.1:"$PRECIS_REDIS_PORT"/*|redis://localhost:"$PRECIS_REDIS_PORT"|redis://localhost:"$PRECIS_REDIS_PORT"/*)
    command -v redis-server >/dev/null || { log "redis-server is missing: apt-get install -y redis-server"; exit 1; }
    log "rate limits in the local Redis on 127.0.0.1:$PRECIS_REDIS_PORT"
    procs=(redis "${procs[@]}") ;;
esac

"$PRECIS_VENV/bin/honcho" start -f Procfile -d "$PRECIS_ROOT" "${procs[@]}" &
sup=$!
stop() { trap - INT TERM; log "stopping"; kill -TERM "$sup" 2>/dev/null || true; wait "$sup" 2>/dev/null || true; exit 0; }
trap stop INT TERM

url="http://127.0.0.1:$PRECIS_GATEWAY_PORT"
deadline=$(( $(date +%s) + ${PRECIS_READY_TIMEOUT:-600} ))
until curl -fsS "$url/readyz" >/dev/null 2>&1 && curl -fsS "http://127.0.0.1:$PRECIS_WORKER_PORT/readyz" >/dev/null 2>&1; do
  if ! kill -0 "$sup" 2>/dev/null; then log "a component exited during start-up (see above)"; exit 1; fi
  if [ "$(date +%s)" -gt "$deadline" ]; then log "not ready after ${PRECIS_READY_TIMEOUT:-600}s"; stop; fi
  sleep 1
done
key="${PRECIS_DEV_API_KEY:-precis-dev-key}"
cat >&2 <<MSG

  Précis is ready in $(( $(date +%s) - t0 ))s at $url   (API docs: $url/docs)

  curl -s $url/v1/summaries -H 'Authorization: Bearer $key' \\
       -H 'Content-Type: application/json' \\
       -d '{"text": "The city council voted on Tuesday to extend the bike lane network by 40 km over three years, citing a 25% rise in cycling since 2020."}'

  Realtime Triton :$PRECIS_TRITON_HTTP_PORT (configs/realtime.pbtxt), batch Triton :$PRECIS_BATCH_TRITON_HTTP_PORT
  (configs/batch.pbtxt, CPU priority ${PRECIS_BATCH_TRITON_CPU_PRIORITY:-idle}). A component that dies is restarted.
  Mail sent by the notifier lands in $PRECIS_VAR_DIR/mail/.  Ctrl-C stops everything.

MSG
wait "$sup"
