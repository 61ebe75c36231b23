#!/usr/bin/env bash
# Smoke-test the built images with podman, the way the chart runs them: the image's own user,
# read-only root filesystem, every capability dropped, no-new-privileges, and only the
# directories the chart mounts writable (tmpfs here, emptyDir there).
#
#   scripts/images/smoke.sh                 every image
#   scripts/images/smoke.sh kafka postgres  a subset (make images-smoke IMAGES="kafka postgres")
#
# Network rule: host networking, every port on 127.0.0.1 only; the services' dependencies that
# are not under test point at 127.0.0.1:1 (nothing listens there). Ports are offset from the
# `make run` ones (+10000) so a running local stack is not disturbed.
# Every container is removed on exit (trap), whatever happens.
set -euo pipefail
# shellcheck source=scripts/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SMOKE_TRITON_TIMEOUT_S="${SMOKE_TRITON_TIMEOUT_S:-600}"
RUN_ID="smoke-$$"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/precis-smoke.XXXXXX")"
FAILED=()

cleanup() {  # every container of this run, by its name prefix (run_c runs in subshells)
  local c
  for c in $(pod ps -a --filter "name=^$RUN_ID-" --format '{{.Names}}' 2>/dev/null); do
    pod rm -f -t 5 "$c" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

ref_of() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["ref"])' "$IMAGES_DIR/$1.json"; }

ensure_image() {  # the ref is in podman's store, or loaded from the archive (e.g. after a wipe)
  local name="$1" ref
  [[ -f "$IMAGES_DIR/$name.json" ]] || die "$name: not built ($IMAGES_DIR/$name.json missing): make images IMAGES=$name"
  ref="$(ref_of "$name")"
  pod image exists "$ref" || pod load -q -i "$IMAGES_DIR/$name.tar" >/dev/null
  echo "$ref"
}

# run_c NAME IMAGE [podman run args...] -- [command args...]
run_c() {
  local name="$RUN_ID-$1" image="$2"; shift 2
  local opts=() args=()
  while [[ $# -gt 0 && "$1" != "--" ]]; do opts+=("$1"); shift; done
  [[ "${1:-}" == "--" ]] && shift
  args=("$@")
  pod run -d --name "$name" --network host "${POD_LIMITS[@]}" \
    --read-only --read-only-tmpfs=false --cap-drop ALL --security-opt no-new-privileges \
    "${opts[@]}" "$image" "${args[@]}" >/dev/null
  echo "$name"
}

logs_of() { pod logs "$1" 2>&1 | tail -n "${2:-30}" >&2; }

wait_tcp() {  # port timeout_s container
  local deadline=$(( $(date +%s) + $2 ))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    if [[ "$(pod inspect -f '{{.State.Running}}' "$3" 2>/dev/null)" != "true" ]]; then
      ilog "$3 exited"; logs_of "$3"; return 1
    fi
    if (( $(date +%s) > deadline )); then ilog "timeout waiting for 127.0.0.1:$1"; logs_of "$3"; return 1; fi
    sleep 1
  done
}

wait_http() {  # url timeout_s container
  local url="$1" deadline=$(( $(date +%s) + $2 ))
  until curl -fsS -o /dev/null --max-time 5 "$url" 2>/dev/null; do
    if [[ "$(pod inspect -f '{{.State.Running}}' "$3" 2>/dev/null)" != "true" ]]; then
      ilog "$3 exited"; logs_of "$3"; return 1
    fi
    if (( $(date +%s) > deadline )); then ilog "timeout waiting for $url"; logs_of "$3"; return 1; fi
    sleep 1
  done
}

ok()   { ilog "smoke $1: OK${2:+ ($2)}"; }
fail() { ilog "smoke $1: FAILED${2:+ ($2)}"; FAILED+=("$1"); }

# ----------------------------------------------------------------------------- kafka
KAFKA_PORT=19092
smoke_kafka() {
  local img c data
  img="$(ensure_image kafka)"
  # The data dir is a host directory here (an emptyDir in the cluster), so a restart can be checked.
  data="$WORK/kafka-data"; mkdir -p "$data"; chown 10003:10003 "$data"
  c="$(run_c kafka "$img" --tmpfs /tmp:rw,mode=1777 -v "$data:/var/lib/kafka" \
        -e KAFKA_ADVERTISED_HOST=127.0.0.1 -e KAFKA_PORT=$KAFKA_PORT -e KAFKA_CONTROLLER_PORT=19093 \
        -e KAFKA_HEAP_OPTS=-Xmx384m)" || { fail kafka "podman run"; return; }
  wait_tcp $KAFKA_PORT 120 "$c" || { fail kafka "no listener"; return; }
  # topic create + list + one message through (aiokafka from the venv: the image has no CLI tools)
  if "$PY" - "127.0.0.1:$KAFKA_PORT" <<'PY'
import asyncio, logging, sys, time
logging.basicConfig(level=logging.CRITICAL)  # aiokafka's retry chatter while the broker starts
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

async def main(bootstrap):
    deadline = time.monotonic() + 120
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            await admin.start()
            break
        except Exception:
            await admin.close()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)
    try:
        await admin.create_topics([NewTopic("precis.smoke", num_partitions=1, replication_factor=1)])
        # CreateTopics answers once the controller has the record; the broker's metadata cache
        # that list_topics reads catches up a moment later (an empty list was seen here once)
        for _ in range(60):
            topics = await admin.list_topics()
            if "precis.smoke" in topics:
                break
            await asyncio.sleep(0.5)
        assert "precis.smoke" in topics, topics
    finally:
        await admin.close()
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await prod.start()
    try:
        await prod.send_and_wait("precis.smoke", b"hello", key=b"k")
    finally:
        await prod.stop()
    cons = AIOKafkaConsumer("precis.smoke", bootstrap_servers=bootstrap, group_id="smoke", auto_offset_reset="earliest")
    await cons.start()
    try:
        msg = await asyncio.wait_for(cons.getone(), 60)
        assert msg.value == b"hello"
    finally:
        await cons.stop()
    # auto.create.topics.enable=false: a metadata request for an unknown topic must not create it
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        print("topics:", sorted(t for t in await admin.list_topics() if not t.startswith("__")))
    finally:
        await admin.close()

asyncio.run(main(sys.argv[1]))
PY
  then
    # restart on the same data dir: no second format, same cluster id, topic still there
    pod restart -t 20 "$c" >/dev/null
    wait_tcp $KAFKA_PORT 120 "$c" || { fail kafka "no listener after restart"; return; }
    if "$PY" - "127.0.0.1:$KAFKA_PORT" <<'PY'
import asyncio, logging, sys, time
logging.basicConfig(level=logging.CRITICAL)
from aiokafka.admin import AIOKafkaAdminClient

async def main(bootstrap):
    deadline = time.monotonic() + 120
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            await admin.start()
            topics = await admin.list_topics()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)
        finally:
            await admin.close()
    assert "precis.smoke" in topics, topics

asyncio.run(main(sys.argv[1]))
PY
    then
      [[ "$(pod logs "$c" 2>&1 | grep -c 'formatting')" == 1 ]] && ok kafka "topic created, listed, message round trip, restart keeps data" \
        || { logs_of "$c"; fail kafka "formatted more than once"; }
    else logs_of "$c"; fail kafka "restart"; fi
  else
    logs_of "$c"; fail kafka
  fi
}

# ----------------------------------------------------------------------------- service
smoke_service() {
  local img c mod port var out
  img="$(ensure_image service)"
  var="$WORK/precis-var"; mkdir -p "$var"; chown 10001:10001 "$var"
  # Exactly the env the chart's ConfigMap/Deployment supplies, minus real backends: PRECIS_ENV=test
  # allows SQLite and the documented dev defaults (production refuses both), Triton points at
  # nothing. async_svc, worker and notifier create their Kafka topics before serving /healthz,
  # so they get the kafka image's broker (smoke_kafka, started first).
  local env=(-e PRECIS_ENV=test -e PRECIS_LOG_LEVEL=INFO
             -e PRECIS_DATABASE_URL=sqlite+aiosqlite:////tmp/precis-var/precis.db
             -e PRECIS_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT
             -e PRECIS_TRITON_GRPC_URL=127.0.0.1:1
             -e PRECIS_REALTIME_URL=http://127.0.0.1:18081 -e PRECIS_ASYNC_URL=http://127.0.0.1:18082
             -e PRECIS_SMTP_HOST=127.0.0.1 -e PRECIS_SMTP_PORT=1)
  # the schema first, as the chart's migrations Job does
  if ! pod run --rm --network host "${POD_LIMITS[@]}" --read-only --read-only-tmpfs=false --cap-drop ALL \
       --security-opt no-new-privileges --tmpfs /tmp:rw,mode=1777 -v "$var:/tmp/precis-var" "${env[@]}" \
       "$img" common.migrate >"$WORK/migrate.log" 2>&1; then
    tail -n 20 "$WORK/migrate.log" >&2; fail "service:common.migrate"; return
  fi
  local -A ports=([gateway]=18080 [realtime_svc]=18081 [async_svc]=18082 [worker]=18083 [notifier]=18084)
  for mod in gateway realtime_svc async_svc worker notifier; do
    port="${ports[$mod]}"
    c="$(run_c "$mod" "$img" --tmpfs /tmp:rw,mode=1777 -v "$var:/tmp/precis-var" "${env[@]}" \
          -e PRECIS_SERVICE_NAME="$mod" -e PRECIS_PORT="$port" -- "$mod")" || { fail "service:$mod" "podman run"; continue; }
    if wait_http "http://127.0.0.1:$port/healthz" 180 "$c"; then
      ok "service:$mod" "$(curl -fsS "http://127.0.0.1:$port/healthz")"
    else
      fail "service:$mod"
    fi
  done
  # The image names no mode (the chart's ConfigMap does): without PRECIS_ENV a service refuses to
  # start, saying what to set (common/settings.py), instead of running with local defaults.
  if out="$(pod run --rm "${POD_LIMITS[@]}" --read-only --cap-drop ALL "$img" gateway 2>&1)"; then
    fail "service:no-env" "gateway started without PRECIS_ENV"
  elif [[ "$out" == *"PRECIS_ENV is not set"* ]]; then
    ok "service:no-env" "refused: PRECIS_ENV is not set"
  else
    printf '%s\n' "$out" | tail -n 5 >&2; fail "service:no-env" "no PRECIS_ENV message"
  fi
  # The image really has no torch/transformers (only the exported tokenizer).
  if pod run --rm "${POD_LIMITS[@]}" --entrypoint python "$img" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('torch', 'transformers')))"; then
    ok "service:no-torch"
  else
    fail "service:no-torch" "torch or transformers in the service image"
  fi
  for mod in gateway realtime_svc async_svc worker notifier; do pod rm -f -t 10 "$RUN_ID-$mod" >/dev/null 2>&1 || true; done
}

# ----------------------------------------------------------------------------- triton-cpu
smoke_triton() {
  local img c out
  img="$(ensure_image triton-cpu)"
  # The chart's args (templates/_helpers.tpl precis.tritonContainer) with the smoke ports.
  c="$(run_c triton "$img" --tmpfs /tmp:rw,mode=1777 --shm-size 256m \
        -e PRECIS_MODEL_DEVICE=cpu -e PRECIS_MODEL_DTYPE=auto -e PRECIS_LOG_LEVEL=INFO -e PRECIS_MODEL_THREADS=2 -- \
        --model-repository=/opt/precis/model_repository --http-port=18000 --grpc-port=18001 \
        --metrics-port=18002 --allow-metrics=true --allow-gpu-metrics=false --strict-readiness=true \
        --exit-on-error=true --model-control-mode=none)" || { fail triton-cpu "podman run"; return; }
  local t0; t0=$(date +%s)
  if ! wait_http "http://127.0.0.1:18000/v2/health/ready" "$SMOKE_TRITON_TIMEOUT_S" "$c"; then fail triton-cpu "not ready"; return; fi
  local ready_s=$(( $(date +%s) - t0 ))
  # The model is decoupled (in-flight batching): HTTP /infer refuses it, so the smoke call goes
  # through gRPC streaming with the services' own client (common/triton_client.py).
  out="$(PYTHONPATH="$PRECIS_ROOT" timeout 300 "$PY" - <<'PYEOF' 2>&1
import asyncio
import json

from common.triton_client import SummarizerClient

TEXT = (
    "The city council voted on Tuesday to fund a new public library in the old market hall. Construction starts in "
    "March and the library should open next spring, with a children's wing and a makerspace."
)


async def main() -> None:
    client = SummarizerClient("127.0.0.1:18001", "summarizer")
    try:
        r = await client.summarize(TEXT, 48, timeout_s=300)
    finally:
        await client.close()
    print(json.dumps({"SUMMARY": [r.summary], "OUTPUT_TOKENS": [r.output_tokens]}))


asyncio.run(main())
PYEOF
)" || { logs_of "$c"; fail triton-cpu "infer: $out"; return; }
  if "$PY" -c 'import json,sys; o=json.loads(sys.argv[1].splitlines()[-1]); s=o["SUMMARY"][0]; assert s.strip() and o["OUTPUT_TOKENS"][0] > 0, o; print(s)' "$out" >"$WORK/summary.txt"; then
    ok triton-cpu "ready in ${ready_s}s; summary: $(head -c 160 "$WORK/summary.txt")"
  else
    logs_of "$c"; fail triton-cpu "bad response: $out"
  fi
  pod rm -f -t 10 "$c" >/dev/null 2>&1 || true
}

# ----------------------------------------------------------------------------- postgres
smoke_postgres() {
  local img c secret
  img="$(ensure_image postgres)"
  secret="$WORK/pg-password"; printf 's3cret-smoke' > "$secret"; chmod 0644 "$secret"
  # The two writable dirs the image needs; the password from a file (as from a Secret volume).
  # The data volume is a root-owned 0777 host dir, like a fresh emptyDir (podman's --tmpfs drops
  # the mode option here).
  local data="$WORK/pg"; mkdir -p "$data"; chmod 0777 "$data"
  c="$(run_c postgres "$img" --tmpfs /tmp:rw,mode=1777 -v "$data:/var/lib/postgresql" \
        -v "$secret:/run/secrets/pg-password:ro" \
        -e POSTGRES_USER=precis -e POSTGRES_DB=precis -e POSTGRES_PASSWORD_FILE=/run/secrets/pg-password \
        -e POSTGRES_PORT=15432)" || { fail postgres "podman run"; return; }
  local deadline=$(( $(date +%s) + 90 ))
  until pod exec "$c" pg_isready -p 15432 -q 2>/dev/null; do
    if (( $(date +%s) > deadline )) || [[ "$(pod inspect -f '{{.State.Running}}' "$c")" != "true" ]]; then
      logs_of "$c"; fail postgres "not ready"; return
    fi
    sleep 1
  done
  if "$PY" - <<'PY'
import asyncio, asyncpg

async def main():
    conn = await asyncpg.connect(host="127.0.0.1", port=15432, user="precis", password="s3cret-smoke", database="precis")
    try:
        assert await conn.fetchval("select current_user") == "precis"
        method = await conn.fetchval("select rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname='precis'")
        assert method, "password not stored as scram-sha-256"
    finally:
        await conn.close()
    try:
        await asyncpg.connect(host="127.0.0.1", port=15432, user="precis", password="wrong", database="precis")
    except asyncpg.InvalidPasswordError:
        pass
    else:
        raise AssertionError("a wrong password was accepted")

asyncio.run(main())
PY
  then ok postgres "pg_isready, scram-sha-256 login as precis/precis, wrong password refused"
  else logs_of "$c"; fail postgres; fi
  pod rm -f -t 10 "$c" >/dev/null 2>&1 || true
}

# ----------------------------------------------------------------------------- smtp-sink
smoke_smtp() {
  local img c
  img="$(ensure_image smtp-sink)"
  c="$(run_c smtp-sink "$img" --tmpfs /tmp:rw,mode=1777 -e PRECIS_SMTP_PORT=11025 -e PRECIS_SMTP_SINK_HTTP_PORT=18025)" \
    || { fail smtp-sink "podman run"; return; }
  if ! wait_http http://127.0.0.1:18025/healthz 30 "$c"; then fail smtp-sink "no /healthz"; return; fi
  if "$PY" - <<'PY'
import json, smtplib, urllib.request
from email.message import EmailMessage

msg = EmailMessage()
msg["From"], msg["To"], msg["Subject"] = "precis@localhost", "user@example.test", "smoke"
msg["Message-ID"] = "<smoke-1@precis.test>"
msg.set_content("one mail")
with smtplib.SMTP("127.0.0.1", 11025, timeout=10) as s:
    s.send_message(msg)
mails = json.load(urllib.request.urlopen("http://127.0.0.1:18025/api/mails", timeout=10))
assert len(mails) == 1, mails
m = mails[0]
assert set(m) == {"id", "from", "to", "subject", "message_id", "received_at"}, m
assert m["to"] == ["user@example.test"] and m["subject"] == "smoke" and m["message_id"] == "<smoke-1@precis.test>", m
req = urllib.request.Request("http://127.0.0.1:18025/api/mails", method="DELETE")
assert json.load(urllib.request.urlopen(req, timeout=10)) == {"deleted": 1}
assert json.load(urllib.request.urlopen("http://127.0.0.1:18025/api/mails", timeout=10)) == []
PY
  then ok smtp-sink "one mail received, listed on /api/mails, deleted"
  else logs_of "$c"; fail smtp-sink; fi
  pod rm -f -t 10 "$c" >/dev/null 2>&1 || true
}

# ----------------------------------------------------------------------------- redis
smoke_redis() {  # as the chart runs it: read-only root, /data writable; a limits counter round trip
  local img c
  img="$(ensure_image redis)"
  c="$(run_c redis "$img" --tmpfs /data:rw,mode=1777 -- \
        --bind 127.0.0.1 --port 16379 --protected-mode no --save "" --appendonly no --dir /data)" \
    || { fail redis "podman run"; return; }
  if ! wait_tcp 16379 30 "$c"; then fail redis "port 16379 not open"; return; fi
  if [[ "$(pod exec "$c" redis-cli -p 16379 ping 2>/dev/null)" == PONG ]] && "$PY" - <<'PY'
import asyncio

from limits import RateLimitItemPerMinute
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string


async def main():
    limiter = SlidingWindowCounterRateLimiter(storage_from_string("async+redis://127.0.0.1:16379/0"))
    item = RateLimitItemPerMinute(2, namespace="smoke")
    assert [await limiter.hit(item, "t") for _ in range(3)] == [True, True, False]

asyncio.run(main())
PY
  then
    if [[ "$(pod exec "$c" redis-cli -p 16379 config get save | tail -n 1)" == "" ]]; then
      ok redis "PONG; the gateway's sliding-window counter (limits) allows 2 of 3; nothing persisted"
    else logs_of "$c"; fail redis "persistence is on"; fi
  else logs_of "$c"; fail redis; fi
  pod rm -f -t 10 "$c" >/dev/null 2>&1 || true
}

# ----------------------------------------------------------------------------- main
names=("$@")
[[ ${#names[@]} -gt 0 ]] || read -r -a names <<<"${IMAGES:-${ALL_IMAGES[*]}}"
want() { [[ " ${names[*]} " == *" $1 "* ]]; }
t_all=$(date +%s)
# kafka first: the service smoke uses its broker.
if want kafka || want service; then smoke_kafka; fi
want service && smoke_service
want postgres && smoke_postgres
want smtp-sink && smoke_smtp
want redis && smoke_redis
want triton-cpu && smoke_triton
if [[ ${#FAILED[@]} -gt 0 ]]; then
  ilog "smoke: FAILED: ${FAILED[*]}"; exit 1
fi
ilog "smoke: all passed in $(( $(date +%s) - t_all ))s (${names[*]})"
