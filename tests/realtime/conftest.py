"""realtime_svc against a real Triton (scripts/triton.sh) on private ports (offset 22000, below the ephemeral port range 32768+: a client socket on such a port can make a later bind fail).

Triton serves a copy of model_repository/ whose queue is tiny (max_queue_size 1, no queue
delay), so a burst of concurrent requests overflows it and the overload path is exercised for
real: Triton rejects, realtime_svc answers 503 + Retry-After.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.procs import ROOT, Proc, http_ok, port_open, start_triton, wait_until

OFFSET = 22000  # Triton 30000-30002, realtime_svc 30081 (+1 for the one facing a dead Triton)
READY_TIMEOUT_S = float(os.environ.get("PRECIS_TEST_TRITON_READY_TIMEOUT_S", "180"))
MAX_INPUT_TOKENS = 128  # above the EN/ZH sample texts, below the 413 test text


@dataclass
class Realtime:
    url: str
    triton: Proc
    proc: Proc


def _small_queue_repo(dest: Path) -> Path:
    repo = dest / "model_repository"
    shutil.copytree(ROOT / "model_repository", repo, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = repo / "summarizer" / "config.pbtxt"
    text = cfg.read_text()
    text, n1 = re.subn(r"max_queue_size: \d+", "max_queue_size: 1", text)
    text, n2 = re.subn(r"max_queue_delay_microseconds: \d+", "max_queue_delay_microseconds: 0", text)
    assert n1 == 1 and n2 == 1, "config.pbtxt changed shape: update tests/realtime/conftest.py"
    cfg.write_text(text)
    return repo


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRECIS_") or k in ("PRECIS_CACHE", "PRECIS_VENV")}
    if "PRECIS_VENV" not in env and sys.prefix != sys.base_prefix:
        env["PRECIS_VENV"] = sys.prefix
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", PRECIS_ENV="test", **extra)
    return env


def start_realtime_svc(port: int, grpc_port: int, log: Path) -> Proc:
    env = _env(
        PRECIS_PORT=str(port),
        PRECIS_TRITON_GRPC_URL=f"127.0.0.1:{grpc_port}",
        PRECIS_REALTIME_MAX_INPUT_TOKENS=str(MAX_INPUT_TOKENS),
        PRECIS_REALTIME_DEADLINE_S="60",
        PRECIS_RETRY_AFTER_S="2",
    )
    proc = Proc(f"realtime_svc:{port}", [sys.executable, "-m", "realtime_svc"], env, log)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60, "realtime_svc /healthz", proc)
    return proc


@pytest.fixture(scope="module")
def realtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Realtime]:
    http, grpc, metrics, svc = (p + OFFSET for p in (8000, 8001, 8002, 8081))
    busy = [p for p in (http, grpc, metrics, svc) if port_open(p)]
    if busy:
        pytest.fail(f"ports {busy} are busy: another realtime test run is going on")
    var = tmp_path_factory.mktemp("realtime")
    env = _env(
        PRECIS_TRITON_HTTP_PORT=str(http),
        PRECIS_TRITON_GRPC_PORT=str(grpc),
        PRECIS_TRITON_METRICS_PORT=str(metrics),
        PRECIS_TRITON_MODEL_REPOSITORY=str(_small_queue_repo(var)),
    )
    try:
        triton = start_triton(env, var / "triton.log", http, READY_TIMEOUT_S)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    svc_proc = None
    try:
        svc_proc = start_realtime_svc(svc, grpc, var / "realtime_svc.log")
        yield Realtime(f"http://127.0.0.1:{svc}", triton, svc_proc)
    finally:
        if svc_proc is not None:
            svc_proc.stop()
        triton.stop(timeout=40)
