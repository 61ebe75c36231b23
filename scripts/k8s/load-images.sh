#!/usr/bin/env bash
# `make k8s-load-images`: imports every image archive described by $PRECIS_CACHE/images/*.json
# ({"name","ref","archive","format",...}) into the cluster containerd's k8s.io namespace, where
# the kubelet finds it (pods use imagePullPolicy IfNotPresent/Never; nothing is ever pulled).
# An image whose archive is unchanged (path+size+mtime) and whose ref still points at the digest
# recorded at its last import is skipped. Callable alone while the cluster is up.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$HERE/env.sh"

[[ -S "$CTRD_SOCK" ]] || die "containerd is not running ($CTRD_SOCK): make k8s-up"
REC="$CTRD_ROOT/precis-loaded"     # lives and dies with containerd's content store
mkdir -p "$REC"
shopt -s nullglob
jsons=("$IMAGES_DIR"/*.json)
((${#jsons[@]})) || { klog "no image descriptors in $IMAGES_DIR"; exit 0; }

digest_of() { ctr_ images ls "name==$1" 2>/dev/null | awk -v r="$1" '$1 == r {print $3}'; }

loaded=0 skipped=0
for j in "${jsons[@]}"; do
  name="$(jq -r .name "$j")" ref="$(jq -r .ref "$j")" archive="$(jq -r .archive "$j")"
  fmt="$(jq -r '.format // "docker-archive"' "$j")"
  # Descriptors without an archive (e.g. a base rootfs another build keeps here) are not images.
  [[ "$archive" != null ]] || continue
  [[ -f "$archive" ]] || { klog "skip $name: archive $archive missing"; continue; }
  key="$archive $(stat -c '%s %Y' "$archive") $ref"
  cur="$(digest_of "$ref")"
  if [[ -n "$cur" && -f "$REC/$name" && "$(cat "$REC/$name")" == "$key $cur" ]]; then
    skipped=$((skipped + 1)); continue
  fi
  # Same image already there? The CRI keeps a "sha256:<image id>" ref next to each image; when
  # the descriptor's image_id (config digest) points at the ref's manifest, nothing to import.
  iid="$(jq -r '.image_id // empty' "$j")"
  if [[ -n "$cur" && -n "$iid" && "$(digest_of "sha256:${iid#sha256:}")" == "$cur" ]]; then
    echo "$key $cur" >"$REC/$name"
    skipped=$((skipped + 1)); continue
  fi
  t="$(now_s)"
  case "$fmt" in
    docker-archive|oci-archive|docker|oci) ;;
    *) die "$j: format '$fmt' not importable (docker-archive or oci-archive)";;
  esac
  # Unpacked now (the default) into overlayfs, so a pod start does not pay for it. No
  # --index-name: on docker archives it makes containerd 1.6 look for a manifest it never wrote.
  out="$(ctr_ images import "$archive" 2>&1)" || { echo "$out" >&2; die "import of $archive failed"; }
  if [[ -z "$(digest_of "$ref")" ]]; then
    # The archive named the image differently: tag what it brought in as the descriptor's ref.
    src="$(sed -n 's/^unpacking \(.*\) (sha256:.*/\1/p' <<<"$out" | head -1)"
    [[ -n "$src" ]] || { echo "$out" >&2; die "$archive: no image found in import output"; }
    ctr_ images tag --force "$src" "$ref" >/dev/null
    ctr_ images rm "$src" >/dev/null 2>&1 || true
    ctr_ images ls "name==$ref" -q | grep -qx "$ref" || die "could not tag $src as $ref"
  fi
  cur="$(digest_of "$ref")"
  echo "$key $cur" >"$REC/$name"
  loaded=$((loaded + 1))
  klog "loaded $ref ($cur, $(( $(stat -c %s "$archive") / 1048576 )) MiB) in $(elapsed "$t") s"
done
# Old tags of our own images (localhost/precis/*, no descriptor names them any more) would pile
# up forever: the kubelet's image GC is off. Drop them, and the CRI's "sha256:<id>" alias when
# no other name shares the manifest; containerd's GC then frees the content.
pruned=0
if [[ "${PRECIS_K8S_PRUNE_IMAGES:-1}" == 1 ]]; then
  wanted=" $(for j in "${jsons[@]}"; do jq -r 'select(.archive != null) | .ref' "$j"; done | tr '\n' ' ') "
  listing="$(ctr_ images ls 2>/dev/null | awk 'NR > 1 {print $1, $3}')"
  while read -r r d; do
    [[ "$r" == localhost/precis/* && "$wanted" != *" $r "* ]] || continue
    ctr_ images rm "$r" >/dev/null 2>&1 || continue
    pruned=$((pruned + 1))
    if ! awk -v d="$d" -v r="$r" '$2 == d && $1 != r && $1 !~ /^sha256:/ {f=1} END {exit !f}' <<<"$listing"; then
      awk -v d="$d" '$2 == d && $1 ~ /^sha256:/ {print $1}' <<<"$listing" | xargs -r ctr --address "$CTRD_SOCK" --namespace k8s.io images rm >/dev/null 2>&1 || true
    fi
  done <<<"$listing"
fi
klog "images: $loaded loaded, $skipped already present, $pruned old tags removed"
