#!/usr/bin/env bash
# The local base image: Debian bookworm made here from packages (no container registry is
# reachable from this machine), imported ONCE into buildah's storage and reused by every image.
#
#   scripts/images/base.sh      -> prints the ref, e.g. localhost/precis/base-bookworm:20261201-1a2b3c4d
#
# Cached by a stamp: $PRECIS_CACHE/images/base.json names the ref and the rootfs tarball; the
# tarball is kept so a wiped container store re-imports in seconds without re-bootstrapping.
# The key is a hash of this script (suite, variant, package list, hooks): edit the script to get
# a new base. The public Dockerfile default (python:3.11-slim-bookworm@sha256:...) is the same
# Debian release; the Dockerfiles work with both (python3 at /usr/bin here, /usr/local/bin there).
set -euo pipefail
# shellcheck source=scripts/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SUITE=bookworm
MIRROR="${PRECIS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${PRECIS_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
# python3-venv brings ensurepip (the images make their own venvs); tini is PID 1 for images whose
# entrypoint is a shell script (kafka, postgres) so signals reach the server and zombies are reaped.
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,tini
key="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-8)"
stamp="$IMAGES_DIR/base.json"
tarball="$IMAGES_DIR/base-$SUITE-$key.tar"

if [[ -f "$stamp" ]] && [[ "$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["key"])' "$stamp")" == "$key" ]]; then
  ref="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["ref"])' "$stamp")"
  if image_id "$ref" >/dev/null; then echo "$ref"; exit 0; fi
  if [[ -f "$tarball" ]]; then
    ilog "base: re-importing $ref from $tarball"
    pod import -q --change 'CMD ["/bin/bash"]' "$tarball" "$ref" >/dev/null
    echo "$ref"; exit 0
  fi
fi

ref="$REGISTRY_PREFIX/base-$SUITE:$(date -u +%Y%m%d)-$key"
ilog "base: bootstrapping Debian $SUITE ($PACKAGES) with mmdebstrap -> $ref"
command -v mmdebstrap >/dev/null || die "mmdebstrap is required (apt-get install -y mmdebstrap)"
t0=$(date +%s)
tmp="$tarball.tmp"
# variant=apt: Essential + apt (so the Dockerfiles can apt-get install their few packages).
# The dpkg path-excludes persist in the image (/etc/dpkg/dpkg.cfg.d/99mmdebstrap), so later
# apt-get installs drop docs/man pages/locales as well, like Docker's slim images.
# The sources list is the deb822 one Debian's own images use (bookworm, -updates, -security).
nice -n 10 mmdebstrap --variant=apt --format=tar --quiet --include="$PACKAGES" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --customize-hook='rm -f "$1"/etc/apt/sources.list' \
  --customize-hook="printf 'Types: deb\nURIs: $MIRROR\nSuites: $SUITE $SUITE-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: $SECURITY_MIRROR\nSuites: $SUITE-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > \"\$1\"/etc/apt/sources.list.d/debian.sources" \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log "$1"/var/log/apt/*' \
  --customize-hook='rm -f "$1"/etc/machine-id "$1"/var/lib/dbus/machine-id; : > "$1"/etc/hostname' \
  "$SUITE" "$tmp" "$MIRROR $SUITE main" "$MIRROR $SUITE-updates main" "$SECURITY_MIRROR $SUITE-security main"
mv "$tmp" "$tarball"
# Old base tarballs (other keys) are dead weight.
find "$IMAGES_DIR" -maxdepth 1 -name "base-$SUITE-*.tar" ! -name "$(basename "$tarball")" -delete
pod import -q --change 'CMD ["/bin/bash"]' "$tarball" "$ref" >/dev/null
# Older bases only take space (vfs stores every layer in full); images built on them keep their
# layers until they are rebuilt.
for old in $(bah images --format '{{.Name}}:{{.Tag}}' 2>/dev/null | grep "^$REGISTRY_PREFIX/base-$SUITE:" | grep -v -x "$ref" || true); do
  bah rmi "$old" >/dev/null 2>&1 || true
done
id="$(image_id "$ref")"
"$PY" - "$stamp" "$ref" "$key" "$tarball" "$id" "$(( $(date +%s) - t0 ))" <<'PY'
import json, os, sys
stamp, ref, key, tarball, image_id, secs = sys.argv[1:]
json.dump({"name": "base", "ref": ref, "key": key, "rootfs": tarball, "image_id": image_id,
           "size_bytes": os.path.getsize(tarball), "build_s": int(secs)}, open(stamp, "w"), indent=2)
PY
ilog "base: $ref ($(du -h "$tarball" | cut -f1)) in $(( $(date +%s) - t0 ))s"
echo "$ref"
