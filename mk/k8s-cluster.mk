# Local single-node Kubernetes (upstream v1.34, built from the Go module proxy) on this machine.
# Included by the top-level Makefile via `-include mk/*.mk`. Details: scripts/k8s/README.md.
#   make k8s-build        build kube-*/kubelet/kubectl, etcd, coredns, kwok, crictl + pause/coredns
#                         images into $(PRECIS_CACHE)/k8s (idempotent, stamped per binary)
#   make k8s-up           start the cluster (node Ready, CoreDNS answering, 2 KWOK GPU nodes);
#                         KUBECONFIG=$(PRECIS_CACHE)/k8s/kubeconfig
#   make k8s-down         stop it and prove nothing is left (processes, mounts, links, iptables)
#   make k8s-load-images  import every $(PRECIS_CACHE)/images/*.json archive into the running cluster
K8S_KUBECONFIG ?= $(PRECIS_CACHE)/k8s/kubeconfig

.PHONY: k8s-build k8s-up k8s-down k8s-load-images k8s-check k8s-e2e

k8s-build:
	@bash scripts/k8s/build.sh

k8s-up: k8s-build
	@bash scripts/k8s/up.sh

k8s-down:
	@bash scripts/k8s/down.sh

k8s-load-images:
	@bash scripts/k8s/load-images.sh

# Only the leftover check of k8s-down (exit 1 if anything of the cluster is still on the host).
k8s-check:
	@bash scripts/k8s/down.sh --check

# The chart on a real cluster, end to end: images, local cluster (unless KUBECONFIG is set),
# helm install/test/upgrade/uninstall, pod faults, GPU placement -> bench/results/k8s-e2e.json.
k8s-e2e: install helm
	@bash scripts/k8s/e2e.sh $(K8S_E2E_ARGS)

# Server-side dry run of every object of every chart profile (custom resources included) against
# the running cluster with the upstream CRDs installed (kept installed afterwards). CRDs come from
# package registries only (scripts/k8s/crds.sh: Go module proxy for KEDA / Prometheus Operator,
# Maven Central for Strimzi), cached in $(PRECIS_CACHE)/k8s/crds. Namespaces precis-dryrun-<profile>
# are created and deleted again. Needs `make k8s-up` first. JSON -> $(K8S_DRY_RUN_OUT).
K8S_DRY_RUN_OUT ?= bench/results/k8s-dry-run.json
K8S_DRY_RUN_ARGS ?=
.PHONY: k8s-dry-run
k8s-dry-run:
	@bash scripts/k8s/crds.sh
	@KUBECONFIG="$${KUBECONFIG:-$(K8S_KUBECONFIG)}" \
	  $(PY) deploy/k8s_dry_run.py --out "$(K8S_DRY_RUN_OUT)" $(K8S_DRY_RUN_ARGS)
