#!/usr/bin/env bash
# Build the Précis images with buildah (no Docker engine, no container registry on this machine)
# and export each one as a docker-archive that `ctr -n k8s.io images import` loads under its ref.
#
#   scripts/images/build.sh                    every image (service triton-cpu kafka postgres smtp-sink redis)
#   scripts/images/build.sh service kafka      a subset (make images IMAGES="service kafka")
#
# Per image, into $PRECIS_CACHE/images/:
#   <name>.tar    docker-archive, tagged with the ref (localhost/precis/<name>:0.1.0-<hash12>)
#   <name>.json   {"name","ref","archive","format","size_bytes","build_s","inputs_hash","cached"}
#                 (+ "image_id", "cold_build_s", "built_at")
#   logs/<name>.log  the buildah output of the last real build
# inputs_hash = sha256 over the Dockerfile, every file it COPYs (from the repo or a named build
# context), the build args and the base image id. An image whose inputs_hash is unchanged and whose archive exists is not
# rebuilt ("cached": true); otherwise `buildah bud --layers` still reuses every unchanged layer.
set -euo pipefail
# shellcheck source=scripts/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Bump when this script changes how images are built in a way the inputs do not show.
BUILD_RECIPE=1
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
KAFKA_LIBS="$PRECIS_CACHE/kafka-$KAFKA_VERSION/libs"
TOKENIZER_JSON="${PRECIS_TOKENIZER_JSON:-$PRECIS_CACHE/tokenizer/smollm2-135m-instruct.tokenizer.json}"
WHEELS_DIR="$PRECIS_CACHE/wheels-portable"
CTX_DIR="$IMAGES_DIR/ctx"
LOG_DIR="$IMAGES_DIR/logs"
# buildah keeps RUN --mount=type=cache directories under $TMPDIR/buildah-cache: pointing TMPDIR
# into the project cache keeps the pip cache (and buildah's temporary blobs) with everything
# else big, outside the clone and out of /var/tmp.
export TMPDIR="$IMAGES_DIR/tmp"
mkdir -p "$CTX_DIR" "$LOG_DIR" "$TMPDIR"

# ----------------------------------------------------------------------------- build contexts
# Inputs from outside the repo come in as named build contexts (--build-context NAME=DIR), each
# replacing an empty `FROM scratch AS NAME` stage of the Dockerfile; no bind mount leaves a trace
# in a layer.
stage_kafka_libs() {  # only the jars (not fetch_kafka.sh's .complete stamp), hard-linked
  "$PRECIS_ROOT/scripts/fetch_kafka.sh" >&2
  rm -rf "$CTX_DIR/kafka-libs" && mkdir -p "$CTX_DIR/kafka-libs"
  cp -l "$KAFKA_LIBS"/*.jar "$CTX_DIR/kafka-libs/" 2>/dev/null || cp "$KAFKA_LIBS"/*.jar "$CTX_DIR/kafka-libs/"
}

stage_tokenizer() {  # the tokenizer.json `make install` exported (docker/service.Dockerfile says why)
  if [[ ! -s "$TOKENIZER_JSON" ]]; then
    ilog "service: exporting the tokenizer with the venv ($TOKENIZER_JSON)"
    (cd "$PRECIS_ROOT" && PYTHONPATH="$PRECIS_ROOT" "$PY" -m common.tokenization export "$TOKENIZER_JSON")
  fi
  mkdir -p "$CTX_DIR/tokenizer/opt/precis"
  cp "$TOKENIZER_JSON" "$CTX_DIR/tokenizer/opt/precis/tokenizer.json"
}

# This machine reaches PyPI through a TLS-intercepting proxy whose CA only the host trusts (the
# host's pip uses PIP_CERT). The build's pip steps get the same bundle through the `pip-config`
# context (mounted at /etc/xdg/pip for those steps only); the images never contain it.
stage_pip_config() {
  local ca="${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-}}}"
  rm -rf "$CTX_DIR/pip-config" && mkdir -p "$CTX_DIR/pip-config"
  if [[ -n "$ca" && -s "$ca" ]]; then
    cp "$ca" "$CTX_DIR/pip-config/ca.crt"
    printf '[global]\ncert = /etc/xdg/pip/ca.crt\n' > "$CTX_DIR/pip-config/pip.conf"
  fi
}

# ----------------------------------------------------------------------------- image recipes
# Each recipe sets: DOCKERFILE INPUTS (repo paths, hashed) EXTRA_HASH (outside inputs, hashed)
# ARGS (build args, hashed) CONTEXTS (named build contexts; content hashed via EXTRA_HASH/ARGS).
# The build context is always the repo root (.dockerignore keeps it to what the images COPY).
recipe() {
  local name="$1"
  DOCKERFILE="docker/$name.Dockerfile"; EXTRA_HASH=""
  ARGS=("APP_VERSION=$APP_VERSION" "BASE_IMAGE=$BASE_REF"); CONTEXTS=(); INPUTS=("$DOCKERFILE")
  case "$name" in
    service)
      stage_tokenizer
      ARGS=("APP_VERSION=$APP_VERSION" "PYTHON_IMAGE=$BASE_REF")
      CONTEXTS=("tokenizer=$CTX_DIR/tokenizer" "pip-config=$CTX_DIR/pip-config")
      EXTRA_HASH="tokenizer=$(sha256sum < "$CTX_DIR/tokenizer/opt/precis/tokenizer.json")"
      INPUTS+=(pyproject.toml README.md common gateway realtime_svc async_svc worker notifier) ;;
    triton-cpu)
      "$PRECIS_ROOT/scripts/images/wheels.sh"
      ARGS+=("WHEELS_DIGEST=$(cd "$WHEELS_DIR" && hash_paths .)")
      CONTEXTS=("wheels=$WHEELS_DIR" "pip-config=$CTX_DIR/pip-config")
      INPUTS+=(model_repository) ;;
    kafka)
      stage_kafka_libs
      ARGS+=("KAFKA_VERSION=$KAFKA_VERSION")
      CONTEXTS=("kafka-libs=$CTX_DIR/kafka-libs")
      EXTRA_HASH="kafka-libs=$(cd "$CTX_DIR/kafka-libs" && hash_paths .)"
      INPUTS+=(scripts/kafka/log4j2.properties docker/kafka/entrypoint.sh) ;;
    postgres)  INPUTS+=(docker/postgres/entrypoint.sh) ;;
    redis) ;;  # the Dockerfile alone (Debian's redis-server)
    smtp-sink)
      CONTEXTS=("pip-config=$CTX_DIR/pip-config")
      INPUTS+=(scripts/smtp_sink.py) ;;
    *) die "unknown image '$name' (known: ${ALL_IMAGES[*]})" ;;
  esac
}

json_get() { "$PY" -c 'import json,sys
try: print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))
except (OSError, ValueError): print("")' "$1" "$2"; }

write_json() {  # name ref archive build_ms inputs_hash cached image_id cold_build_s built_at
  "$PY" - "$@" <<'PY'
import json, os, sys
name, ref, archive, build_ms, inputs_hash, cached, image_id, cold, built_at = sys.argv[1:]
build_s = int(build_ms) / 1000
cold = build_s if cached != "true" or not cold else cold
out = os.path.join(os.path.dirname(archive), f"{name}.json")
rec = {"name": name, "ref": ref, "archive": archive, "format": "docker-archive",
       "size_bytes": os.path.getsize(archive), "build_s": round(build_s, 1),
       "inputs_hash": inputs_hash, "cached": cached == "true",
       "image_id": image_id, "cold_build_s": round(float(cold), 1), "built_at": built_at}
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(rec, f, indent=2)
    f.write("\n")
os.replace(tmp, out)
PY
}

build_one() {
  local name="$1" t0 hash ref archive json log arg c
  t0=$(date +%s%3N)
  recipe "$name"
  archive="$IMAGES_DIR/$name.tar"; json="$IMAGES_DIR/$name.json"; log="$LOG_DIR/$name.log"
  hash="$( { echo "recipe=$BUILD_RECIPE"; echo "base_id=$BASE_ID"; echo "$EXTRA_HASH";
             (cd "$PRECIS_ROOT" && hash_paths "${INPUTS[@]}");
             printf 'arg=%s\n' "${ARGS[@]}"; } | sha256sum | cut -d' ' -f1)"
  ref="$REGISTRY_PREFIX/$name:$APP_VERSION-${hash:0:12}"
  if [[ "$(json_get "$json" inputs_hash)" == "$hash" && -s "$archive" ]]; then
    write_json "$name" "$ref" "$archive" "$(( $(date +%s%3N) - t0 ))" "$hash" true \
      "$(json_get "$json" image_id)" "$(json_get "$json" cold_build_s)" "$(json_get "$json" built_at)"
    return 0
  fi
  ilog "$name: building $ref (log: $log)"
  local bud=(bud --isolation chroot --layers --format docker -f "$DOCKERFILE" -t "$ref")
  for arg in "${ARGS[@]}"; do bud+=(--build-arg "$arg"); done
  for c in "${CONTEXTS[@]}"; do bud+=(--build-context "$c"); done
  if ! (cd "$PRECIS_ROOT" && nice -n 10 buildah --storage-driver vfs "${bud[@]}" .) >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "$name: buildah bud failed (full log: $log)"
  fi
  # docker-archive with the ref as its tag: `ctr -n k8s.io images import` and `podman load` both
  # keep the name, so the kubelet finds the image the chart names (imagePullPolicy: Never).
  rm -f "$archive.tmp"
  bah push --quiet "$ref" "docker-archive:$archive.tmp:$ref" >>"$log" 2>&1 || { tail -n 20 "$log" >&2; die "$name: export failed"; }
  mv "$archive.tmp" "$archive"
  # Older builds of this image only take space (vfs stores every layer in full).
  local old
  for old in $(bah images --format '{{.Name}}:{{.Tag}}' 2>/dev/null | grep "^$REGISTRY_PREFIX/$name:" | grep -v -x "$ref" || true); do
    bah rmi "$old" >/dev/null 2>&1 || true
  done
  local ms=$(( $(date +%s%3N) - t0 ))
  write_json "$name" "$ref" "$archive" "$ms" "$hash" false "$(image_id "$ref")" "$ms" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}

# ----------------------------------------------------------------------------- main
command -v buildah >/dev/null || die "buildah is required (apt-get install -y buildah podman mmdebstrap)"
[[ -x "$PY" ]] || die "no venv python at $PY (make install)"
names=("$@")
[[ ${#names[@]} -gt 0 ]] || read -r -a names <<<"${IMAGES:-${ALL_IMAGES[*]}}"
for n in "${names[@]}"; do [[ " ${ALL_IMAGES[*]} " == *" $n "* ]] || die "unknown image '$n' (known: ${ALL_IMAGES[*]})"; done

stage_pip_config
BASE_REF="$("$PRECIS_ROOT/scripts/images/base.sh")"
BASE_ID="$(image_id "$BASE_REF")"
[[ -n "$BASE_ID" ]] || die "base image $BASE_REF is not in buildah's storage"

# vfs keeps every layer in full (~0.6 GB per step of the service image): images nothing uses
# any more (older builds' layers, a failed build's leftovers) are removed before and after the
# builds, or the disk fills up (a CI run failed with "no space left on device"). Only dangling
# images go: the layers of the current builds stay as the --layers cache.
prune_dangling() {
  local before after
  before=$(df -Pk /var/lib/containers 2>/dev/null | awk 'NR==2 {print $4}')
  pod image prune -f >/dev/null 2>&1 || true
  after=$(df -Pk /var/lib/containers 2>/dev/null | awk 'NR==2 {print $4}')
  if [[ -n "$before" && -n "$after" && "$after" -gt "$before" ]]; then
    ilog "pruned unused image layers: $(( (after - before) / 1048576 )) GiB freed, $(( after / 1048576 )) GiB free"
  fi
}
prune_dangling
for n in "${names[@]}"; do build_one "$n"; done
prune_dangling

"$PY" - "$IMAGES_DIR" "${names[@]}" <<'PY'
import json, os, sys
d, names = sys.argv[1], sys.argv[2:]
rows = [json.load(open(os.path.join(d, f"{n}.json"))) for n in names]
w = max(len(r["ref"]) for r in rows)
print(f"{'image':<11} {'ref':<{w}} {'size':>9} {'build s':>8} {'cold s':>7}  cached")
for r in rows:
    print(f"{r['name']:<11} {r['ref']:<{w}} {r['size_bytes'] / 2**20:>7.0f}Mi {r['build_s']:>8.1f} "
          f"{r.get('cold_build_s', 0):>7.0f}  {'yes' if r['cached'] else 'no'}")
PY
