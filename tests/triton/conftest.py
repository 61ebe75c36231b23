"""A real Triton server (scripts/triton.sh: the tritonserver binary of the nvidia-pytriton
wheel, CPU, python backend) serving model_repository/, for the tests in this folder."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack import Proc, TritonPorts, child_env, start_triton

READY_TIMEOUT_S = float(os.environ.get("PRECIS_TEST_TRITON_READY_TIMEOUT_S", "180"))


@dataclass(frozen=True)
class TritonServer:
    http_url: str  # http://127.0.0.1:<http port>
    grpc_url: str  # 127.0.0.1:<grpc port> (tritonclient form, no scheme)
    metrics_url: str  # http://127.0.0.1:<metrics port>/metrics
    log_path: Path
    proc: Proc


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """Start scripts/triton.sh on private ports, wait for /v2/health/ready, stop with SIGTERM."""
    ports = TritonPorts.allocate()
    var = tmp_path_factory.mktemp("triton")
    # model settings of the caller's shell (PRECIS_MODEL_ENGINE, ...) reach model.py
    env = child_env(inherit=("PRECIS_MODEL_", "PRECIS_LLAMACPP_"))
    try:
        proc = start_triton(ports, env, var / "triton.log", READY_TIMEOUT_S)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield TritonServer(ports.http_url, ports.grpc_url, ports.metrics_url, var / "triton.log", proc)
    finally:
        # SIGTERM to the process group (scripts/triton.sh execs tritonserver): a clean stop.
        rc = proc.stop(timeout=40)
        if rc not in (0, -signal.SIGTERM):
            print(f"tritonserver exited with {rc}:\n{proc.tail(40)}", file=sys.stderr)


@pytest.fixture(scope="session")
def engine_module():
    """The ``summarizer_engine`` package (model_repository/summarizer/1/summarizer_engine/), used
    without Triton; importable through the project's editable install (pyproject.toml)."""
    import summarizer_engine

    return summarizer_engine
