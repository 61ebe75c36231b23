# shellcheck shell=bash disable=SC2034
# Shared settings for scripts/k8s/*.sh (sourced, not run).
# Everything lives outside the git clone, under $PRECIS_CACHE/k8s.
export PATH="/usr/local/go/bin:/usr/sbin:/sbin:$PATH"
source "$(dirname "${BASH_SOURCE[0]}")/../cache.sh"

# Versions (Go module proxy). KWOK/CoreDNS/etcd are built in their own wrapper modules, so
# their k8s.io/* dependency versions never meet those of Kubernetes itself.
export K8S_VERSION="${K8S_VERSION:-v1.34.4}"
export ETCD_VERSION="${ETCD_VERSION:-v3.6.7}"      # the etcd line Kubernetes 1.34 is tested with
export COREDNS_VERSION="${COREDNS_VERSION:-v1.12.4}"
export KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
export CRICTL_VERSION="${CRICTL_VERSION:-v1.34.0}"
export PAUSE_TAG="3.10"

K8S_HOME="$PRECIS_CACHE/k8s"
K8S_BIN="$K8S_HOME/$K8S_VERSION/bin"
K8S_SRC="$K8S_HOME/$K8S_VERSION/src"
K8S_PKI="$K8S_HOME/pki"                       # certs: generated once, kept by k8s-down
K8S_RUN="$K8S_HOME/run"                       # pid files, logs, configs, up.json
K8S_DATA="$K8S_HOME/data"                     # etcd (wiped by k8s-down), containerd (kept: images)
K8S_KUBECONFIG="$K8S_HOME/kubeconfig"
IMAGES_DIR="$PRECIS_CACHE/images"
export PATH="$K8S_BIN:$PATH"

# Network: only addresses of 198.18.0.0/15 (RFC 2544 benchmarking range), all on this machine.
NODE_IF="precis0"                    # port-less bridge that carries the node IP (no dummy driver here)
NODE_IP="198.18.255.1"
POD_CIDR="198.18.0.0/16"             # cluster CIDR; the node gets 198.18.0.0/24
NODE_POD_CIDR="198.18.0.0/24"
SERVICE_CIDR="198.19.0.0/16"
KUBERNETES_SVC_IP="198.19.0.1"
CLUSTER_DNS="198.19.0.10"
CLUSTER_DOMAIN="cluster.local"
NODE_NAME="precis-node"
BRIDGE_IF="cni0"

# Ports: the apiserver listens on NODE_IP:6443 only; etcd, controller-manager, scheduler,
# kube-proxy health/metrics and the kubelet's healthz on 127.0.0.1; the kubelet API on NODE_IP.
APISERVER_PORT=6443
ETCD_CLIENT_PORT=23790               # not 2379: leave the default free for anything else
ETCD_PEER_PORT=23800

CTRD_ROOT="$K8S_DATA/containerd/root"
CTRD_STATE="$K8S_HOME/containerd-state"       # runtime state (shim sockets, mounts' bookkeeping)
CTRD_SOCK="$K8S_HOME/containerd-state/containerd.sock"
KUBELET_ROOT="$K8S_HOME/kubelet"
CNI_CONF_DIR="$K8S_RUN/cni/net.d"
CNI_BIN_DIR="/usr/lib/cni"                    # Debian containernetworking-plugins

klog() { printf '\033[1m[k8s]\033[0m %s\n' "$*" >&2; }
die() { klog "ERROR: $*"; exit 1; }
now_s() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now_s)" 'BEGIN{printf "%.1f", b-a}'; }
kc() { "$K8S_BIN/kubectl" --kubeconfig "$K8S_KUBECONFIG" "$@"; }
ctr_() { ctr --address "$CTRD_SOCK" --namespace k8s.io "$@"; }
