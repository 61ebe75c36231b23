#!/usr/bin/env bash
# `make k8s-up`: a real single-node Kubernetes on this machine, every component a background
# process (pid file + log under $PRECIS_CACHE/k8s/run/), then CoreDNS, the preloaded images and
# two KWOK-simulated GPU nodes. Waits until the node is Ready and DNS answers from the host.
# Network: everything lives in 198.18.0.0/15 on this machine (see env.sh); nothing is pulled.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$HERE/env.sh"
T0="$(now_s)"
trap 'klog "k8s-up failed: logs in $K8S_RUN/*.log; make k8s-down removes what was started"' ERR

for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd coredns kwok crictl; do
  [[ -x "$K8S_BIN/$b" ]] || die "$K8S_BIN/$b missing: run make k8s-build"
done
[[ -f "$IMAGES_DIR/pause.json" && -f "$IMAGES_DIR/coredns.json" ]] || die "pause/coredns images missing: run make k8s-build"

mkdir -p "$K8S_RUN" "$K8S_PKI" "$K8S_DATA" "$KUBELET_ROOT" "$CTRD_STATE" "$CNI_CONF_DIR"

running() { [[ -f "$K8S_RUN/$1.pid" ]] && kill -0 "$(cat "$K8S_RUN/$1.pid")" 2>/dev/null; }
if running kube-apiserver || running kubelet || running containerd; then
  die "a cluster is already running (make k8s-down first)"
fi
# A crashed previous run may have left state behind: start from the documented clean slate.
bash "$HERE/down.sh" --quiet

# start name cmd...: background process, own session (setsid) so k8s-down can stop its group.
start() {
  local name="$1"; shift
  klog "start $name"
  setsid "$@" >"$K8S_RUN/$name.log" 2>&1 </dev/null &
  echo $! >"$K8S_RUN/$name.pid"
}
# wait_for desc timeout_s cmd...: poll until cmd succeeds; on timeout show the logs' tails.
wait_for() {
  local desc="$1" timeout="$2" t; shift 2; t="$(now_s)"
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) - ${t%.*} > timeout )); then
      klog "timed out after ${timeout}s waiting for $desc"
      for f in "$K8S_RUN"/*.log; do echo "--- $f"; tail -5 "$f"; done >&2
      exit 1
    fi
    local p; for p in "$K8S_RUN"/*.pid; do
      kill -0 "$(cat "$p")" 2>/dev/null || { n="$(basename "$p" .pid)"; tail -20 "$K8S_RUN/$n.log" >&2; die "$n exited"; }
    done
    sleep 0.5
  done
  klog "$desc ($(elapsed "$t") s)"
}

# --- host network ----------------------------------------------------------------------------
# Record what we change so k8s-down restores it exactly.
[[ -f "$K8S_RUN/host-before.env" ]] || {
  echo "IP_FORWARD=$(sysctl -n net.ipv4.ip_forward)"
  # CNI-* chains some other tool (podman) may own: k8s-down leaves exactly these alone.
  echo "CNI_CHAINS_BEFORE='$( { iptables-save; ip6tables-save; } 2>/dev/null | awk '/^:CNI-/{print substr($1,2)}' | sort -u | tr '\n' ' ')'"
  echo "NFT_TABLES_BEFORE='$(nft list tables 2>/dev/null | tr '\n' ',' )'"
} >"$K8S_RUN/host-before.env"
# The node IP lives on a port-less bridge (this kernel has no `dummy` driver): a local address,
# and anything routed *out* of it goes nowhere (no ports; NOARP so no neighbour probing).
ip link add "$NODE_IF" type bridge
ip link set "$NODE_IF" arp off addrgenmode none
ip addr add "$NODE_IP/32" dev "$NODE_IF"
ip link set "$NODE_IF" up
# Host -> ClusterIP: connect() needs a route before kube-proxy's OUTPUT DNAT rewrites the
# destination; a route into precis0 is that (unmatched service IPs are silently dropped there).
ip route add "$SERVICE_CIDR" dev "$NODE_IF" src "$NODE_IP"
# Everything else in 198.18.0.0/15 (KWOK pods' fake IPs, unallocated pod IPs) fails fast
# locally instead of following the default route off the machine. cni0's /24 is more specific.
ip route add unreachable 198.18.0.0/15
sysctl -qw net.ipv4.ip_forward=1   # pod <-> host <-> pod routing through cni0
# Pods may talk to 198.18.0.0/15 and to this host only: forwarded traffic leaving that range is
# rejected (nothing reaches another machine, whatever a pod tries).
iptables -N PRECIS-FORWARD
iptables -A PRECIS-FORWARD -s "$POD_CIDR" ! -d 198.18.0.0/15 -j REJECT --reject-with icmp-net-prohibited
iptables -I FORWARD 1 -j PRECIS-FORWARD
# Kube-proxy's iptables rules only see bridged pod->pod traffic with br_netfilter on.
sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true

# --- PKI (once; kept by k8s-down) ----------------------------------------------------------------
pki() {
  local P="$K8S_PKI"
  [[ -f "$P/.complete-v2" ]] && return
  klog "generating certificates in $P (openssl, once)"
  mkdir -p "$P" && chmod 700 "$P"
  ca() { # name CN
    [[ -f "$P/$1.crt" ]] || openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$2" \
      -keyout "$P/$1.key" -out "$P/$1.crt" 2>/dev/null
  }
  ca ca precis-kubernetes-ca
  # The aggregation layer's CA (requestheader): lets the controller-manager/scheduler load their
  # authentication config cleanly, and an aggregated API (metrics-server) work if installed.
  ca front-proxy-ca precis-front-proxy-ca
  # cert name CN O [sanlist] [ca]
  cert() {
    local n="$1" cn="$2" o="$3" san="${4:-}" cab="${5:-ca}" ext="$P/$1.ext"
    [[ -f "$P/$n.crt" ]] && return
    {
      echo "basicConstraints=CA:FALSE"
      echo "keyUsage=critical,digitalSignature,keyEncipherment"
      if [[ -n "$san" ]]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$san"
      else echo "extendedKeyUsage=clientAuth"; fi
    } >"$ext"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn${o:+/O=$o}" -keyout "$P/$n.key" -out "$P/$n.csr" 2>/dev/null
    openssl x509 -req -in "$P/$n.csr" -CA "$P/$cab.crt" -CAkey "$P/$cab.key" -CAcreateserial -days 3650 \
      -extfile "$ext" -out "$P/$n.crt" 2>/dev/null
    rm -f "$P/$n.csr" "$ext"
  }
  cert apiserver kube-apiserver "" "IP:$NODE_IP,IP:127.0.0.1,IP:$KUBERNETES_SVC_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert admin kubernetes-admin system:masters
  cert controller-manager system:kube-controller-manager ""
  cert scheduler system:kube-scheduler ""
  cert kube-proxy system:kube-proxy ""
  # NodeRestriction: the kubelet is exactly system:node:<name> in system:nodes.
  cert kubelet-client "system:node:$NODE_NAME" system:nodes
  cert kubelet-server "system:node:$NODE_NAME" "" "IP:$NODE_IP,DNS:$NODE_NAME"
  cert front-proxy-client front-proxy-client "" "" front-proxy-ca
  [[ -f "$P/sa.key" ]] || openssl genrsa -out "$P/sa.key" 2048 2>/dev/null
  openssl rsa -in "$P/sa.key" -pubout -out "$P/sa.pub" 2>/dev/null
  touch "$P/.complete-v2"
}
kubeconfig() { # file user cert
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: precis
  cluster: {server: "https://$NODE_IP:$APISERVER_PORT", certificate-authority: "$K8S_PKI/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$K8S_PKI/$3.crt", client-key: "$K8S_PKI/$3.key"}
contexts:
- name: precis
  context: {cluster: precis, user: $2}
current-context: precis
EOF
  chmod 600 "$1"
}
pki
kubeconfig "$K8S_KUBECONFIG" admin admin
for c in controller-manager scheduler kube-proxy kubelet-client; do kubeconfig "$K8S_RUN/$c.kubeconfig" "$c" "$c"; done

# --- etcd (loopback only; fresh data each up) -------------------------------------------------
rm -rf "$K8S_DATA/etcd"
start etcd "$K8S_BIN/etcd" --name precis --data-dir "$K8S_DATA/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "precis=http://127.0.0.1:$ETCD_PEER_PORT" \
  --listen-metrics-urls "" --log-level warn \
  --unsafe-no-fsync   # a throwaway dev cluster: fsync on a shared disk only costs startup time

# --- containerd (own root/state/socket, cgroupfs, local pause, own CNI conf) ---------------------
# Pods get RLIMIT_NOFILE = this container's hard limit: containerd's default 1024 is too low for
# Kafka/Triton, and anything above the hard limit fails in runc ("error setting rlimit type 7").
NOFILE="$(ulimit -Hn)"; [[ "$NOFILE" == unlimited ]] && NOFILE=1048576
ctr oci spec | jq --argjson n "$NOFILE" '.process.rlimits = [{type:"RLIMIT_NOFILE", hard:$n, soft:$n}]' \
  >"$K8S_RUN/base-runtime-spec.json"
cat >"$K8S_RUN/containerd.toml" <<EOF
version = 2
root = "$CTRD_ROOT"
state = "$CTRD_STATE"
# Snapshotters/plugins this box cannot use; disabling them keeps the log free of probe errors.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = ""
[debug]
  address = ""
  level = "warn"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/precis/pause:$PAUSE_TAG"
  # Port-forward/exec stream server: loopback only.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Pod netns bind mounts under our state dir (not /run/netns), so k8s-down knows them all.
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = false
  # This sandbox forbids lowering oom_score_adj (even as root): without this, runc fails every
  # pod with "failed to update /proc/self/oom_score_adj: Permission denied" (the kubelet asks
  # -998 for sandboxes). Clamps pods' scores to containerd's own (0) instead.
  restrict_oom_score_adj = true
  tolerate_missing_hugetlb_controller = true
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    # Images are preloaded: never let the CRI plugin discard our unpacked layers.
    discard_unpacked_layers = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      base_runtime_spec = "$K8S_RUN/base-runtime-spec.json"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$CTRD_STATE/runc"
        # cgroup v1 hybrid host without systemd as init: the cgroupfs driver (kubelet matches).
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$CNI_CONF_DIR"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
EOF
# bridge cni0 + host-local on the node's /24 (IPAM state in our run dir), portmap for hostPort.
# hairpinMode: a pod reaching its own Service IP gets its packets back through the bridge.
# ipMasq off: pods never need NAT to leave the machine (they must not leave it at all).
cat >"$CNI_CONF_DIR/10-precis.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "precis",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE_IF", "isGateway": true, "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$K8S_RUN/cni/ipam",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "${NODE_POD_CIDR%.0/24}.1"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
start containerd containerd --config "$K8S_RUN/containerd.toml"

# --- kube-apiserver ------------------------------------------------------------------------------
wait_for "etcd healthy" 60 "$K8S_BIN/etcdctl" --endpoints "127.0.0.1:$ETCD_CLIENT_PORT" endpoint health
P="$K8S_PKI"
start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
  --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --service-cluster-ip-range "$SERVICE_CIDR" --service-node-port-range 30000-32767 \
  --client-ca-file "$P/ca.crt" --tls-cert-file "$P/apiserver.crt" --tls-private-key-file "$P/apiserver.key" \
  --kubelet-client-certificate "$P/apiserver-kubelet-client.crt" --kubelet-client-key "$P/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$P/ca.crt" --kubelet-preferred-address-types InternalIP \
  --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
  --service-account-key-file "$P/sa.pub" --service-account-signing-key-file "$P/sa.key" \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
  --requestheader-client-ca-file "$P/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "$P/front-proxy-client.crt" --proxy-client-key-file "$P/front-proxy-client.key" \
  --allow-privileged=true --anonymous-auth=true --profiling=false \
  --endpoint-reconciler-type lease --event-ttl 1h --v 1
# anonymous-auth: only so /readyz /livez answer unauthenticated (RBAC grants anonymous nothing else).
kubeconfig_ok() { kc get --raw /readyz; }

# --- images into containerd (k8s.io namespace) -----------------------------------------------------
wait_for "containerd up" 60 ctr --address "$CTRD_SOCK" version
bash "$HERE/load-images.sh"

wait_for "kube-apiserver ready" 120 kubeconfig_ok
# Controllers only once RBAC is bootstrapped (they exit if their first reads are forbidden).
start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$K8S_RUN/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$K8S_RUN/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$K8S_RUN/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false \
  --allocate-node-cidrs=true --cluster-cidr "$POD_CIDR" --node-cidr-mask-size 24 \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --service-account-private-key-file "$P/sa.key" --root-ca-file "$P/ca.crt" \
  --use-service-account-credentials=true \
  --cluster-signing-cert-file "$P/ca.crt" --cluster-signing-key-file "$P/ca.key" \
  --profiling=false --v 1
# leader-elect off: one instance, and it starts working at once instead of after a lease wait.
start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig "$K8S_RUN/scheduler.kubeconfig" \
  --authentication-kubeconfig "$K8S_RUN/scheduler.kubeconfig" \
  --authorization-kubeconfig "$K8S_RUN/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false --profiling=false --v 1


# --- kubelet -------------------------------------------------------------------------------------
cat >"$K8S_RUN/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "$NODE_IP"
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$P/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$P/kubelet-server.crt"
tlsPrivateKeyFile: "$P/kubelet-server.key"
containerRuntimeEndpoint: "unix://$CTRD_SOCK"
# cgroup v1 hybrid host (containerd uses cgroupfs too). 1.34 refuses cgroup v1 unless told.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
# This box is a container/VM slice: do not reserve or enforce node allocatable cgroups, and do
# not insist on kernel sysctl defaults we may not own.
enforceNodeAllocatable: []
protectKernelDefaults: false
clusterDNS: ["$CLUSTER_DNS"]
clusterDomain: "$CLUSTER_DOMAIN"
# No host resolv.conf: pods with dnsPolicy Default get no upstream resolver (the host's lives
# off-machine); ClusterFirst pods get CoreDNS only.
resolvConf: ""
maxPods: 110
serializeImagePulls: false
# Preloaded images are never garbage-collected (nothing could pull them back).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
imageMinimumGCAge: 876000h
# A shared dev disk: evict only when truly full.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
evictionPressureTransitionPeriod: 30s
nodeStatusUpdateFrequency: 10s
podPidsLimit: -1
# No systemd logind here: graceful node shutdown would need its inhibitor lock.
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
containerLogMaxSize: 20Mi
containerLogMaxFiles: 2
registerNode: true
rotateCertificates: false
serverTLSBootstrap: false
localStorageCapacityIsolation: true
EOF
start kubelet "$K8S_BIN/kubelet" --config "$K8S_RUN/kubelet.yaml" \
  --kubeconfig "$K8S_RUN/kubelet-client.kubeconfig" --root-dir "$KUBELET_ROOT" \
  --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v 1

# --- kube-proxy ----------------------------------------------------------------------------------
cat >"$K8S_RUN/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$K8S_RUN/kube-proxy.kubeconfig"}
mode: iptables
clusterCIDR: "$POD_CIDR"
detectLocalMode: ClusterCIDR
hostnameOverride: "$NODE_NAME"
bindAddress: "$NODE_IP"
healthzBindAddress: "127.0.0.1:10256"
metricsBindAddress: "127.0.0.1:10249"
# NodePorts answer on the node IP only (not on eth0, not on 127.0.0.1: localhost NodePorts
# would need route_localnet=1 on the host).
nodePortAddresses: ["$NODE_IP/32"]
iptables: {localhostNodePorts: false, masqueradeAll: false, syncPeriod: 30s, minSyncPeriod: 1s}
# 0 = leave the host's conntrack sysctls alone (not ours to tune).
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
start kube-proxy "$K8S_BIN/kube-proxy" --config "$K8S_RUN/kube-proxy.yaml" --v 1

node_ready() {
  [[ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}
wait_for "node $NODE_NAME Ready" 180 node_ready

# --- CoreDNS: cluster.local (and reverse zones of our CIDRs) only, no forward ---------------------
COREDNS_REF="$(jq -r .ref "$IMAGES_DIR/coredns.json")"
sed -e "s|@COREDNS_IMAGE@|$COREDNS_REF|g" -e "s|@CLUSTER_DNS@|$CLUSTER_DNS|g" \
    -e "s|@CLUSTER_DOMAIN@|$CLUSTER_DOMAIN|g" -e "s|@NODE_NAME@|$NODE_NAME|g" \
    "$HERE/manifests/coredns.yaml" | kc apply -f - >/dev/null

# --- KWOK: two simulated GPU nodes (no kubelet; kwok fakes node heartbeats and pod status) ------
# They carry what the NVIDIA GPU operator (GFD + device plugin) puts on real nodes, plus the
# chart's pool labels (values-gpu.yaml) and the usual nvidia.com/gpu NoSchedule taint.
# KWOK's own server (logs/exec) is off; fake pod IPs come from the node's podCIDR (unroutable:
# 198.18.0.0/15 is an unreachable route here).
sed -e "s|@K8S_VERSION@|$K8S_VERSION|g" "$HERE/manifests/kwok-nodes.yaml" | kc apply -f - >/dev/null
start kwok "$K8S_BIN/kwok" --kubeconfig "$K8S_KUBECONFIG" \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --node-ip 198.18.255.2 --cidr 198.18.254.0/24 \
  --node-lease-duration-seconds 40

kwok_ready() {
  local n; for n in gpu-a100-0 gpu-t4-0; do
    [[ "$(kc get node "$n" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]] || return 1
  done
}
wait_for "kwok nodes gpu-a100-0, gpu-t4-0 Ready" 120 kwok_ready
wait_for "CoreDNS available" 120 kc -n kube-system rollout status deploy/coredns --timeout 2s
dns_ok() {
  [[ "$(dig +time=1 +tries=1 +short @"$CLUSTER_DNS" "kubernetes.default.svc.$CLUSTER_DOMAIN" A)" == "$KUBERNETES_SVC_IP" ]]
}
wait_for "DNS from the host: kubernetes.default.svc.$CLUSTER_DOMAIN -> $KUBERNETES_SVC_IP" 60 dns_ok

S="$(elapsed "$T0")"
printf '{"cluster_up_s": %s, "kubeconfig": "%s", "node": "%s", "node_ip": "%s", "pod_cidr": "%s", "service_cidr": "%s", "cluster_dns": "%s", "k8s_version": "%s"}\n' \
  "$S" "$K8S_KUBECONFIG" "$NODE_NAME" "$NODE_IP" "$POD_CIDR" "$SERVICE_CIDR" "$CLUSTER_DNS" "$K8S_VERSION" >"$K8S_RUN/up.json"
kc get nodes -o wide >&2
klog "cluster up in $S s  (export KUBECONFIG=$K8S_KUBECONFIG; make k8s-down to stop)"
