"""realtime_svc against a real Triton (scripts/triton.sh) on private ports (devstack.PORTS: below
the ephemeral port range 32768+, where a client socket can make a later bind fail).

Triton serves a copy of model_repository/ whose queue is tiny (max_queue_size 1, no queue
delay), so a burst of concurrent requests overflows it and the overload path is exercised for
real: Triton rejects, realtime_svc answers 503 + Retry-After.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.internal_auth import InternalTokenAuth
from devstack import INTERNAL_TOKEN_SECRET, PORTS, ROOT, Proc, TritonPorts, child_env, start_service, start_triton

READY_TIMEOUT_S = float(os.environ.get("PRECIS_TEST_TRITON_READY_TIMEOUT_S", "180"))
MAX_INPUT_TOKENS = 128  # above the EN/ZH sample texts, below the 413 test text
# realtime_svc directly, signed as the gateway signs (child_env gave it INTERNAL_TOKEN_SECRET)
AUTH = InternalTokenAuth(INTERNAL_TOKEN_SECRET, "realtime-tests", "realtime_svc")


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


def start_realtime_svc(port: int, grpc_port: int, log: Path) -> Proc:
    env = child_env(
        PRECIS_TRITON_GRPC_URL=f"127.0.0.1:{grpc_port}",
        PRECIS_REALTIME_MAX_INPUT_TOKENS=str(MAX_INPUT_TOKENS),
        PRECIS_REALTIME_DEADLINE_S="60",
        PRECIS_RETRY_AFTER_S="2",
    )
    return start_service("realtime_svc", port, env, log, name=f"realtime_svc:{port}")


@pytest.fixture(scope="module")
def realtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Realtime]:
    ports, svc = TritonPorts.allocate(), PORTS.one()
    var = tmp_path_factory.mktemp("realtime")
    env = child_env(PRECIS_TRITON_MODEL_REPOSITORY=str(_small_queue_repo(var)))
    try:
        triton = start_triton(ports, env, var / "triton.log", READY_TIMEOUT_S)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    svc_proc = None
    try:
        svc_proc = start_realtime_svc(svc, ports.grpc, var / "realtime_svc.log")
        yield Realtime(f"http://127.0.0.1:{svc}", triton, svc_proc)
    finally:
        if svc_proc is not None:
            svc_proc.stop()
        triton.stop(timeout=40)
