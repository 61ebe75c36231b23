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

from tests.procs import ROOT, Proc, port_open, start_triton

TRITON_OFFSET = 10000  # HTTP 18000, gRPC 18001, metrics 18002 (make run: 8000..8002, e2e: 28000..)
READY_TIMEOUT_S = float(os.environ.get("PRECIS_TEST_TRITON_READY_TIMEOUT_S", "180"))
ENGINE_DIR = ROOT / "model_repository" / "summarizer" / "1"


@dataclass(frozen=True)
class TritonServer:
    http_url: str  # http://127.0.0.1:18000
    grpc_url: str  # 127.0.0.1:18001 (tritonclient form, no scheme)
    metrics_url: str  # http://127.0.0.1:18002/metrics
    log_path: Path
    proc: Proc


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """Start scripts/triton.sh on private ports, wait for /v2/health/ready, stop with SIGTERM."""
    http, grpc, metrics = (p + TRITON_OFFSET for p in (8000, 8001, 8002))
    busy = [p for p in (http, grpc, metrics) if port_open(p)]
    if busy:
        pytest.fail(f"ports {busy} are busy: another test Triton server is running")
    var = tmp_path_factory.mktemp("triton")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRECIS_TRITON_")}
    env.update(
        PRECIS_TRITON_HTTP_PORT=str(http),
        PRECIS_TRITON_GRPC_PORT=str(grpc),
        PRECIS_TRITON_METRICS_PORT=str(metrics),
    )
    if "PRECIS_VENV" not in env and sys.prefix != sys.base_prefix:
        env["PRECIS_VENV"] = sys.prefix  # the venv running pytest also serves the model
    try:
        proc = start_triton(env, var / "triton.log", http, READY_TIMEOUT_S)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    base = f"http://127.0.0.1:{http}"
    try:
        yield TritonServer(base, f"127.0.0.1:{grpc}", f"http://127.0.0.1:{metrics}/metrics", var / "triton.log", proc)
    finally:
        # SIGTERM to the process group (scripts/triton.sh execs tritonserver): a clean stop.
        rc = proc.stop(timeout=40)
        if rc not in (0, -signal.SIGTERM):
            print(f"tritonserver exited with {rc}:\n{proc.tail(40)}", file=sys.stderr)


@pytest.fixture(scope="session")
def engine_module():
    """model_repository/summarizer/1/summarizer_engine.py, importable without Triton."""
    sys.path.insert(0, str(ENGINE_DIR))
    try:
        import summarizer_engine
    finally:
        sys.path.remove(str(ENGINE_DIR))
    return summarizer_engine
