# Précis — one entry point for humans and CI. `make run` starts the platform, `make test` tests it.
SHELL := /bin/bash
# The one make default of the cache (Python: common/paths.py, shell: scripts/cache.sh); exported
# to mk/*.mk and every script make runs.
PRECIS_CACHE ?= $(HOME)/.cache/precis
PRECIS_VENV ?= $(PRECIS_CACHE)/venv
PY ?= $(PRECIS_VENV)/bin/python
export PRECIS_CACHE PRECIS_VENV
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
PYTEST_ARGS ?=

.PHONY: help install run test test-unit test-integration test-e2e test-faults test-security eval bench bench-realtime bench-async clean

help:
	@echo "make run         start the whole platform locally (installs what is missing)"
	@echo "make test        the whole test suite (unit, integration, e2e, chart)"
	@echo "make test-faults fault-injection tests (real broker, store, Triton)"
	@echo "make test-security the security suite (SSRF, tenants, limits, injection, poisoned events)"
	@echo "make chart-test  helm lint/template + schema validation + chart tests"
	@echo "make eval        ROUGE of the model on the eval set"
	@echo "make bench-realtime / bench-async / bench-http-client / bench-local-split   benchmarks -> bench/results/"

install:
	@scripts/bootstrap.sh

run:
	@scripts/run.sh

test: install
	$(PY) -m pytest -m "not faults and not security" $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: install
	$(PY) -m pytest tests/integration tests/triton $(PYTEST_ARGS)

test-e2e: install
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

test-faults: install
	$(PY) -m pytest -m faults tests/faults $(PYTEST_ARGS)

# tests/security/conftest.py marks everything under tests/security; docs/security.md says what each
# test stands for.
test-security: install
	$(PY) -m pytest -m security tests/security $(PYTEST_ARGS)

clean:
	rm -rf var/ .pytest_cache

# In-flight vs static batching, Poisson open loop (bench/inflight_bench.py says how) ->
# bench/results/inflight.{json,png}; a few minutes on 2 cores. Takes the machine-wide CPU lock.
.PHONY: bench-inflight
bench-inflight: install
	flock $(or $(PRECIS_CPU_LOCK),/tmp/precis-cpu.lock) $(PY) -m bench.inflight_bench $(BENCH_INFLIGHT_ARGS)

-include mk/*.mk
