#!/usr/bin/env bash
# Builds the two images the cluster itself needs, FROM scratch with Debian's buildah, and exports
# each as a docker-archive under $PRECIS_CACHE/images/ with its descriptor <name>.json:
#   pause   localhost/precis/pause:3.10            (static C binary from scripts/k8s/pause.c)
#   coredns localhost/precis/coredns:<version>     (the coredns binary from build.sh)
# A rebuild is skipped while the descriptor's inputs_hash is unchanged and the archive exists.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$HERE/env.sh"

# Own buildah storage (vfs: no overlay-in-overlay or fuse needed; chroot isolation: no
# user-namespace/runc inside this container). Kept apart from any other engineer's storage.
BSTORE="$K8S_HOME/buildah"
BUILDAH=(buildah --root "$BSTORE/storage" --runroot "$BSTORE/run" --storage-driver vfs)
WORK="$K8S_HOME/images-work"
mkdir -p "$IMAGES_DIR" "$WORK" "$BSTORE"

sha() { sha256sum | cut -d' ' -f1; }

# build_image name ref inputs_hash rootfs_dir entrypoint_json user
build_image() {
  local name="$1" ref="$2" hash="$3" src="$4" entry="$5" user="$6"
  local json="$IMAGES_DIR/$name.json" archive="$IMAGES_DIR/$name.tar"
  if [[ -f "$json" && -f "$archive" ]] && [[ "$(jq -r .inputs_hash "$json")" == "$hash" ]]; then
    klog "image $ref: up to date ($json)"
    return
  fi
  local t c; t="$(now_s)"
  c="$("${BUILDAH[@]}" from --isolation chroot --name "precis-$name-build" scratch)"
  # shellcheck disable=SC2064
  trap "\"\${BUILDAH[@]}\" rm '$c' >/dev/null 2>&1 || true" RETURN
  "${BUILDAH[@]}" copy "$c" "$src/." / >/dev/null
  "${BUILDAH[@]}" config --entrypoint "$entry" --cmd '' --user "$user" \
    --label "dev.precis.inputs-hash=$hash" --os linux --arch amd64 "$c"
  # --timestamp 0: same inputs, same image digest (the loader skips digests containerd has).
  "${BUILDAH[@]}" commit --quiet --timestamp 0 --rm "$c" "$ref" >/dev/null
  trap - RETURN
  rm -f "$archive.tmp"
  "${BUILDAH[@]}" push --quiet "$ref" "docker-archive:$archive.tmp:$ref"
  mv -f "$archive.tmp" "$archive"
  "${BUILDAH[@]}" rmi "$ref" >/dev/null 2>&1 || true   # the archive is the artifact
  local s iid; s="$(elapsed "$t")"
  # image_id = config digest (what the CRI calls the image ID; load-images.sh skips on it).
  iid="$(tar -xOf "$archive" manifest.json | jq -r '.[0].Config' | sed 's|^blobs/sha256/||; s|\.json$||')"
  jq -n --arg name "$name" --arg ref "$ref" --arg archive "$archive" --arg fmt docker-archive \
    --argjson size "$(stat -c %s "$archive")" --argjson build_s "$s" --arg hash "$hash" --arg iid "$iid" \
    '{name:$name, ref:$ref, archive:$archive, format:$fmt, size_bytes:$size, build_s:$build_s, inputs_hash:$hash, image_id:$iid}' \
    >"$json.tmp"
  mv -f "$json.tmp" "$json"
  printf '  image %-38s %6s s  %6s KiB  %s\n' "$ref" "$s" "$(( $(stat -c %s "$archive") / 1024 ))" "$archive"
}

# --- pause ---------------------------------------------------------------------------------
pause_ref="localhost/precis/pause:$PAUSE_TAG"
pause_hash="$( { cat "$HERE/pause.c"; gcc --version | head -1; echo "$pause_ref v1"; } | sha)"
if [[ ! -f "$IMAGES_DIR/pause.json" || "$(jq -r .inputs_hash "$IMAGES_DIR/pause.json" 2>/dev/null)" != "$pause_hash" || ! -f "$IMAGES_DIR/pause.tar" ]]; then
  rm -rf "$WORK/pause" && mkdir -p "$WORK/pause"
  gcc -static -O2 -Wall -Wextra -o "$WORK/pause/pause" "$HERE/pause.c"
  strip "$WORK/pause/pause"
fi
# 65535: the conventional unprivileged uid of the pause container.
build_image pause "$pause_ref" "$pause_hash" "$WORK/pause" '["/pause"]' 65535:65535

# --- coredns -------------------------------------------------------------------------------
coredns_ref="localhost/precis/coredns:${COREDNS_VERSION#v}"
[[ -x "$K8S_BIN/coredns" ]] || die "coredns not built: run scripts/k8s/build.sh"
coredns_hash="$( { sha256sum <"$K8S_BIN/coredns"; echo "$coredns_ref v1"; } | sha)"
if [[ ! -f "$IMAGES_DIR/coredns.json" || "$(jq -r .inputs_hash "$IMAGES_DIR/coredns.json" 2>/dev/null)" != "$coredns_hash" || ! -f "$IMAGES_DIR/coredns.tar" ]]; then
  rm -rf "$WORK/coredns" && mkdir -p "$WORK/coredns/etc/coredns"
  install -m 0755 "$K8S_BIN/coredns" "$WORK/coredns/coredns"
fi
# 65532: distroless "nonroot"; port 53 is opened via the pod's ip_unprivileged_port_start sysctl.
build_image coredns "$coredns_ref" "$coredns_hash" "$WORK/coredns" '["/coredns"]' 65532:65532
