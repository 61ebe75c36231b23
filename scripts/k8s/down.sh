#!/usr/bin/env bash
# `make k8s-down`: stops the local cluster and removes everything it put on the host: processes,
# mounts (pod netns, shm, overlay rootfs, kubelet volumes), interfaces (cni0, veths, precis0),
# routes, iptables/nftables rules (KUBE-*, CNI-* of ours, PRECIS-*), sysctls it changed, cgroups.
# Keeps: binaries, images (containerd's content store), certificates. Removes: etcd data,
# kubelet pod dirs, CNI IPAM state (each k8s-up is a fresh cluster).
# Safe when nothing is up. Ends with check(): prints what is left and exits 1 if anything is.
#   down.sh [--quiet]   (--quiet: used by up.sh to clear a crashed run; prints only leftovers)
#   down.sh --check     (only the check)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$HERE/env.sh"
QUIET=0 CHECK_ONLY=0
case "${1:-}" in --quiet) QUIET=1;; --check) CHECK_ONLY=1;; esac
say() { ((QUIET)) || klog "$@"; }

pid_of() { [[ -f "$K8S_RUN/$1.pid" ]] && cat "$K8S_RUN/$1.pid"; }
alive() { kill -0 "$1" 2>/dev/null; }

# stop name [timeout]: SIGTERM to the process group up.sh started (setsid), then SIGKILL.
stop() {
  local name="$1" timeout="${2:-15}" pid i
  pid="$(pid_of "$name")" || return 0
  if alive "$pid"; then
    say "stop $name ($pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; }
  fi
  rm -f "$K8S_RUN/$name.pid"
}

# Processes of ours that no pid file names: binaries run from $K8S_BIN, and containerd shims /
# runc / pod processes started through our containerd (their cmdline names our socket or their
# cgroup lies under kubepods).
our_pids() {
  local p exe cmd
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    [[ "$p" == "$$" || "$p" == "$BASHPID" ]] && continue
    exe="$(readlink "/proc/$p/exe" 2>/dev/null)" || continue
    cmd="$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" || continue
    if [[ "$exe" == "$K8S_BIN/"* || "$cmd" == *"$CTRD_SOCK"* || "$cmd" == *"$K8S_RUN/containerd.toml"* ]] \
       || grep -qE ':/kubepods(/|$)' "/proc/$p/cgroup" 2>/dev/null; then
      echo "$p"
    fi
  done
}

our_mounts() { # mount points under our dirs or pod netns/shm, deepest first
  awk '{print $5}' /proc/self/mountinfo | sed 's/\\040/ /g' \
    | grep -E "^($K8S_HOME|$CTRD_STATE|$KUBELET_ROOT|/run/containerd/io.containerd|/run/netns/cni-|/var/run/netns/cni-)" \
    | awk '{print length, $0}' | sort -rn | cut -d' ' -f2- || true
}

ipt_tables=(filter nat mangle raw security)
# iptables here is the nft backend (what kubelet and kube-proxy use). The legacy tools are only
# looked at when legacy tables already exist: merely querying them instantiates empty x_tables.
ipt_bins() {
  echo iptables; echo ip6tables
  [[ -s /proc/net/ip_tables_names ]] && command -v iptables-legacy >/dev/null && echo iptables-legacy
  [[ -s /proc/net/ip6_tables_names ]] && command -v ip6tables-legacy >/dev/null && echo ip6tables-legacy
  return 0
}
# shellcheck disable=SC1091
[[ -f "$K8S_RUN/host-before.env" ]] && source "$K8S_RUN/host-before.env"
CNI_CHAINS_BEFORE=" ${CNI_CHAINS_BEFORE:-} "
our_chain() { # chain name -> ours?
  case "$1" in
    KUBE-*|PRECIS-*) return 0;;
    CNI-*) [[ "$CNI_CHAINS_BEFORE" != *" $1 "* ]];;
    *) return 1;;
  esac
}
our_chains() { # bin table -> our chains present
  "$1-save" -t "$2" 2>/dev/null | awk '/^:/{print substr($1,2)}' | while read -r c; do our_chain "$c" && echo "$c"; done || true
}

clean_iptables() {
  local b t c rule
  for b in $(ipt_bins); do
    for t in "${ipt_tables[@]}"; do
      local chains; chains="$(our_chains "$b" "$t")"
      [[ -n "$chains" ]] || continue
      # 1) drop every rule that jumps to one of our chains, from any chain (built-ins included).
      { "$b-save" -t "$t" 2>/dev/null | grep -E '^-A ' || true; } | while read -r rule; do
        c="$(sed -n 's/.* -[jg] \([^ ]*\).*/\1/p' <<<"$rule")"
        [[ -n "$c" ]] && our_chain "$c" || continue
        # shellcheck disable=SC2086
        eval "$b -t $t ${rule/-A /-D }" 2>/dev/null || true
      done
      # 2) flush, then delete our chains.
      for c in $chains; do "$b" -t "$t" -F "$c" 2>/dev/null || true; done
      for c in $chains; do "$b" -t "$t" -X "$c" 2>/dev/null || true; done
    done
  done
  # iptables-nft leaves the tables it created; drop those that are empty now and were not
  # there before k8s-up (an empty table has no rules, but "nothing left" means nothing).
  local fam name
  while read -r _ fam name; do
    [[ -n "$name" ]] || continue
    [[ ",${NFT_TABLES_BEFORE:-}," == *",table $fam $name,"* ]] && continue
    case "$name" in filter|nat|mangle|raw|security|kube-proxy) ;; *) continue;; esac
    local body; body="$(nft list table "$fam" "$name" 2>/dev/null)" || continue
    if ! grep -qvE '^\s*(table|chain|type|policy|\}|$)' <<<"$body"; then
      nft delete table "$fam" "$name" 2>/dev/null || true
    fi
  done < <(nft list tables 2>/dev/null || true)
}

check() {
  local left=0 out
  out="$(our_pids | while read -r p; do ps -o pid=,args= -p "$p" 2>/dev/null; done)"
  if [[ -n "$out" ]]; then echo "processes left:"; echo "$out"; left=1; fi
  out="$(our_mounts)"
  if [[ -n "$out" ]]; then echo "mounts left:"; echo "$out"; left=1; fi
  out="$(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^($BRIDGE_IF|$NODE_IF)$" || true)"
  out+="$(ip -o link show master "$BRIDGE_IF" 2>/dev/null | awk -F': ' '{print $2}' || true)"
  if [[ -n "$out" ]]; then echo "interfaces left:"; echo "$out"; left=1; fi
  out="$(ip route show 2>/dev/null | grep -E '^(unreachable )?198\.1[89]\.' || true)"
  if [[ -n "$out" ]]; then echo "routes left:"; echo "$out"; left=1; fi
  local b t c
  out="$(for b in $(ipt_bins); do for t in "${ipt_tables[@]}"; do
    for c in $(our_chains "$b" "$t"); do echo "$b -t $t chain $c"; done
    "$b-save" -t "$t" 2>/dev/null | { grep -E '^-A .*(KUBE-|PRECIS-|198\.1[89]\.)' || true; } | sed "s/^/$b -t $t: /"
  done; done | sort -u)"
  if [[ -n "$out" ]]; then echo "iptables left:"; echo "$out"; left=1; fi
  out="$(nft list tables 2>/dev/null | grep -E 'kube-proxy|precis' || true)"
  if [[ -n "$out" ]]; then echo "nftables left:"; echo "$out"; left=1; fi
  out="$(ls -d /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods 2>/dev/null || true)"
  if [[ -n "$out" ]]; then echo "cgroups left:"; echo "$out"; left=1; fi
  if ((left)); then echo "k8s-down: something is left (above)" >&2; return 1; fi
  ((QUIET)) || klog "k8s-down check: no process, mount, interface, route, iptables/nftables rule or cgroup left"
}

((CHECK_ONLY)) && { check; exit $?; }

# 1) control loops first, so nothing recreates what we remove.
stop kwok 5
stop kube-controller-manager 5
stop kube-scheduler 5

# 2) every pod sandbox through CRI while containerd runs: CNI DEL (veth, IPAM, portmap rules),
#    shm/rootfs/netns unmounts happen the proper way. The kubelet goes first or it restarts them.
stop kubelet 10
if [[ -S "$CTRD_SOCK" ]] && ctr --address "$CTRD_SOCK" version >/dev/null 2>&1; then
  export CONTAINER_RUNTIME_ENDPOINT="unix://$CTRD_SOCK" IMAGE_SERVICE_ENDPOINT="unix://$CTRD_SOCK"
  n="$("$K8S_BIN/crictl" --timeout 10s pods -q 2>/dev/null | wc -l || echo 0)"
  if ((n > 0)); then
    say "remove $n pod sandboxes (CRI)"
    "$K8S_BIN/crictl" --timeout 60s rmp --all --force >/dev/null 2>&1 || true
  fi
fi
stop kube-proxy 5
stop containerd 20
stop kube-apiserver 10
stop etcd 10

# 3) stragglers: shims (they outlive containerd by design), pod processes, our binaries.
for sig in TERM KILL; do
  pids="$(our_pids | tr '\n' ' ')"
  [[ -n "${pids// }" ]] || break
  say "SIG$sig to leftover processes: $pids"
  # shellcheck disable=SC2086
  kill -"$sig" $pids 2>/dev/null || true
  sleep 2
done

# 4) mounts, deepest first (lazy as a last resort: a busy mount must not block the rest).
for m in $(our_mounts); do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
for m in $(our_mounts); do umount -l "$m" 2>/dev/null || true; done

# 5) iptables: kube-proxy's own cleanup first (knows its chains in every mode), then the rest.
"$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
clean_iptables

# 6) interfaces and routes.
if ip link show "$BRIDGE_IF" >/dev/null 2>&1; then
  for v in $(ip -o link show master "$BRIDGE_IF" | awk -F': ' '{print $2}' | cut -d@ -f1); do ip link del "$v" 2>/dev/null || true; done
  ip link del "$BRIDGE_IF" 2>/dev/null || true
fi
ip link del "$NODE_IF" 2>/dev/null || true      # also drops the service-CIDR route via it
ip route del unreachable 198.18.0.0/15 2>/dev/null || true
ip route del "$SERVICE_CIDR" 2>/dev/null || true

# 7) ip_forward back to its value before k8s-up, unless another tool on this host (podman's
#    netavark, docker, CNI) has forwarding rules now: turning it off would cut its containers.
if [[ "${IP_FORWARD:-1}" == 0 && "$(sysctl -n net.ipv4.ip_forward)" == 1 ]]; then
  rules="$( { iptables-save; ip6tables-save; } 2>/dev/null || true)"
  if grep -qE '^:(NETAVARK|DOCKER|CNI-)' <<<"$rules"; then
    say "ip_forward left at 1: another container tool (netavark/docker/CNI chains) uses it"
  else
    sysctl -qw net.ipv4.ip_forward=0
  fi
fi

# 8) cgroups the kubelet created (leaf first; empty now that the processes are gone).
for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
  [[ -d "$d" ]] || continue
  find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
done

# 9) state of this cluster instance (binaries, images, certs stay).
rm -rf --one-file-system "$K8S_DATA/etcd" "$K8S_RUN/cni/ipam" "$KUBELET_ROOT" "$K8S_RUN/host-before.env"
rm -f "$K8S_RUN"/*.pid
check
