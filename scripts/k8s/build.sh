#!/usr/bin/env bash
# Builds everything the single-node cluster needs, from the Go module proxy and Debian only:
#   $PRECIS_CACHE/k8s/<version>/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,
#   kubelet,kube-proxy,kubectl,etcd,etcdctl,coredns,kwok}, the Debian runtime packages, and the
#   pause + coredns images (scripts/k8s/images.sh).
# Idempotent: one stamp per binary keyed on component version + Go version; a stamped binary is
# never rebuilt. Prints build seconds and size per binary and the total.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$HERE/env.sh"

GO="${GO:-/usr/local/go/bin/go}"
GO_VERSION="$("$GO" env GOVERSION)"
# Build on a shared 2-core box: low priority, static binaries (no cgo: no C toolchain in the
# critical path and no libc dependency), no VCS stamping (the module cache has no .git).
NICE=(nice -n 10)
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false" GOTOOLCHAIN=local
T_ALL="$(now_s)"
mkdir -p "$K8S_BIN" "$K8S_SRC"

APT_PKGS=(containerd runc containernetworking-plugins iptables conntrack socat ethtool ipset
  iproute2 kmod buildah gcc libc6-dev openssl dnsutils procps psmisc util-linux)

install_debs() {
  local missing=() p
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    klog "apt-get install ${missing[*]}"
    local t; t="$(now_s)"
    export DEBIAN_FRONTEND=noninteractive
    # Lock timeout: another engineer's build may be running apt at the same time.
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >"$K8S_HOME/apt.log" 2>&1 || {
      apt-get -o DPkg::Lock::Timeout=600 update >>"$K8S_HOME/apt.log" 2>&1
      apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >>"$K8S_HOME/apt.log" 2>&1 \
        || die "apt-get failed, see $K8S_HOME/apt.log"
    }
    # Debian starts containerd as a service where systemd runs; here we run our own instance
    # with our own config, so make sure the packaged one (if any got started) is not used.
    klog "debian packages installed in $(elapsed "$t") s"
  fi
}

stamp_ok() { # name key
  [[ -x "$K8S_BIN/$1" && -f "$K8S_BIN/.$1.stamp" && "$(cat "$K8S_BIN/.$1.stamp")" == "$2" ]]
}
report() { # name seconds
  printf '  %-24s %8s s  %6s MiB\n' "$1" "$2" "$(( $(stat -c %s "$K8S_BIN/$1") / 1048576 ))"
  echo "$(date -u +%FT%TZ) $1 $2" >>"$K8S_BIN/.build-times"   # history of real builds
}

# One wrapper module per tool: requires the tool's module and (for Kubernetes) replaces every
# ./staging/... module with its published k8s.io/<name> v0.<minor>.<patch> twin.
wrapper() { # dir module version
  local dir="$1" mod="$2" ver="$3"
  mkdir -p "$dir"
  if [[ ! -f "$dir/go.mod" ]] || ! grep -q "$mod $ver" "$dir/go.mod"; then
    rm -f "$dir/go.mod" "$dir/go.sum"
    (cd "$dir" && "$GO" mod init "precis.local/wrapper/$(basename "$dir")" >/dev/null 2>&1 \
      && "$GO" mod edit -require="$mod@$ver")
  fi
}

build_kubernetes() {
  local names=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
  local key="$K8S_VERSION $GO_VERSION" todo=() n
  for n in "${names[@]}"; do stamp_ok "$n" "$key" || todo+=("$n"); done
  ((${#todo[@]})) || { klog "kubernetes $K8S_VERSION: built (stamps match)"; return; }
  local dir="$K8S_SRC/kubernetes"
  wrapper "$dir" k8s.io/kubernetes "$K8S_VERSION"
  (cd "$dir" && "$GO" mod download k8s.io/kubernetes)
  local kdir staging_ver="v0.${K8S_VERSION#v1.}"
  kdir="$(cd "$dir" && "$GO" list -m -f '{{.Dir}}' k8s.io/kubernetes)"
  # The replace list is read from Kubernetes' own go.mod, so a new patch release needs no edit.
  local m args=()
  for m in $(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$kdir/go.mod"); do
    args+=("-replace=$m=$m@$staging_ver")
  done
  ((${#args[@]} > 20)) || die "could not read staging replaces from $kdir/go.mod"
  (cd "$dir" && "$GO" mod edit "${args[@]}" -go=1.24.0 -godebug=default=go1.24)
  local major minor
  major="$(cut -d. -f1 <<<"${K8S_VERSION#v}")"; minor="$(cut -d. -f2 <<<"$K8S_VERSION")"
  # Version stamping as hack/lib/version.sh does: kubelet registers its version on the Node,
  # the apiserver serves /version, kubectl checks skew; v0.0.0-master breaks all three.
  local ld="-s -w" p
  for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done
  local pkgs=()
  for n in "${names[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$n"); done
  klog "building kubernetes $K8S_VERSION: ${names[*]} (one go build, shared cache; log $K8S_HOME/build-kubernetes.log)"
  local t; t="$(now_s)"
  # -mod=mod: let go fill go.sum for the wrapper (there is no vendored tree to check against).
  (cd "$dir" && "${NICE[@]}" "$GO" build -mod=mod -trimpath -ldflags "$ld" -o "$K8S_BIN/" "${pkgs[@]}") \
    >"$K8S_HOME/build-kubernetes.log" 2>&1 || { tail -30 "$K8S_HOME/build-kubernetes.log"; die "kubernetes build failed"; }
  local s; s="$(elapsed "$t")"
  for n in "${names[@]}"; do echo "$key" >"$K8S_BIN/.$n.stamp"; report "$n" "$s(all)"; done
  "$K8S_BIN/kube-apiserver" --version | grep -q "$K8S_VERSION" || die "kube-apiserver is not stamped $K8S_VERSION"
}

build_one() { # name module version pkg [ldflags]
  local name="$1" mod="$2" ver="$3" pkg="$4" ld="-s -w ${5:-}"
  local key="$ver $GO_VERSION"
  stamp_ok "$name" "$key" && { klog "$name $ver: built (stamp matches)"; return; }
  local dir="$K8S_SRC/$name"
  wrapper "$dir" "$mod" "$ver"
  klog "building $name $ver (log $K8S_HOME/build-$name.log)"
  local t; t="$(now_s)"
  (cd "$dir" && "${NICE[@]}" "$GO" build -mod=mod -trimpath -ldflags "$ld" -o "$K8S_BIN/$name" "$pkg") \
    >"$K8S_HOME/build-$name.log" 2>&1 || { tail -30 "$K8S_HOME/build-$name.log"; die "$name build failed"; }
  echo "$key" >"$K8S_BIN/.$name.stamp"
  report "$name" "$(elapsed "$t")"
}

build_coredns() {
  local key="$COREDNS_VERSION $GO_VERSION"
  stamp_ok coredns "$key" && { klog "coredns $COREDNS_VERSION: built (stamp matches)"; return; }
  local dir="$K8S_SRC/coredns"
  wrapper "$dir" github.com/coredns/coredns "$COREDNS_VERSION"
  # Only the plugins our Corefile uses: the stock plugin list drags in the AWS/Azure/GCP SDKs
  # (minutes of compile on 2 cores) and `forward`, which this cluster must never have.
  cat >"$dir/main.go" <<'EOF'
// CoreDNS with the plugins a cluster.local-only resolver needs (no forward, no cloud DNS).
package main

import (
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/whoami"

	"github.com/coredns/coredns/coremain"
)

func main() { coremain.Run() }
EOF
  klog "building coredns $COREDNS_VERSION (log $K8S_HOME/build-coredns.log)"
  local t; t="$(now_s)"
  (cd "$dir" && "${NICE[@]}" "$GO" build -mod=mod -trimpath -ldflags "-s -w" -o "$K8S_BIN/coredns" .) \
    >"$K8S_HOME/build-coredns.log" 2>&1 || { tail -30 "$K8S_HOME/build-coredns.log"; die "coredns build failed"; }
  echo "$key" >"$K8S_BIN/.coredns.stamp"
  report coredns "$(elapsed "$t")"
}

main() {
  mkdir -p "$K8S_HOME"
  local t; t="$(now_s)"
  install_debs
  build_kubernetes
  build_one etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3
  build_one etcdctl go.etcd.io/etcd/etcdctl/v3 "$ETCD_VERSION" go.etcd.io/etcd/etcdctl/v3
  # crictl: k8s-down removes every pod sandbox through CRI, so CNI DEL tears down veths and
  # IPAM, and containerd unmounts shm/rootfs/netns, before anything is killed.
  build_one crictl sigs.k8s.io/cri-tools "$CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl \
    "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
  build_coredns
  build_one kwok sigs.k8s.io/kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok \
    "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
  bash "$HERE/images.sh"
  # Stable path for callers: $PRECIS_CACHE/k8s/bin/kubectl is the v1.34 client (the system
  # kubectl may be older than the one-minor skew kubectl supports).
  ln -sfn "$K8S_VERSION/bin" "$K8S_HOME/bin"
  klog "k8s-build done in $(elapsed "$T_ALL") s; binaries in $K8S_BIN"
}
main "$@"
