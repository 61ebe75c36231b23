"""The gateway's answers when an internal service is gone or stuck (real gateway process, real
sockets): a closed port and a listener that never answers, the two ways an upstream fails."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack import PORTS, child_env, start_service

AUTH = {"Authorization": "Bearer precis-dev-key"}


@pytest.fixture(scope="module")
def blackhole() -> Iterator[int]:
    """Accepts TCP connections (kernel backlog) and never reads or answers: a hung upstream."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, blackhole: int) -> Iterator[str]:
    gateway_port = PORTS.one()
    var = tmp_path_factory.mktemp("gw")
    env = child_env(
        var,
        PRECIS_ENV="local",
        PRECIS_REALTIME_URL=f"http://127.0.0.1:{blackhole}",  # hung
        PRECIS_ASYNC_URL=f"http://127.0.0.1:{PORTS.one()}",  # nothing listens
        PRECIS_REALTIME_TIMEOUT_S="0.5",
    )
    proc = start_service("gateway", gateway_port, env, Path(var) / "gateway.log")
    try:
        yield f"http://127.0.0.1:{gateway_port}"
    finally:
        proc.stop()


def assert_problem(r: httpx.Response, status: int, type_suffix: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"].endswith(type_suffix) and body["status"] == status
    assert "Traceback" not in r.text
    return body


def test_hung_realtime_svc_gives_504_at_the_deadline(gateway: str) -> None:
    t0 = time.monotonic()
    r = httpx.post(
        f"{gateway}/v1/summaries", json={"text": "A short text.", "mode": "realtime"}, headers=AUTH, timeout=10
    )
    took = time.monotonic() - t0
    body = assert_problem(r, 504, "upstream-timeout")
    assert "0.5 s" in body["detail"]
    assert took < 5, took  # bounded by the configured deadline, not by a default of 30 s


def test_async_svc_down_gives_503_with_retry_after(gateway: str) -> None:
    r = httpx.post(
        f"{gateway}/v1/summaries",
        json={"text": "A short text.", "mode": "async"},
        headers={**AUTH, "Idempotency-Key": "k1"},
        timeout=10,
    )
    assert_problem(r, 503, "upstream-unavailable")
    assert int(r.headers["retry-after"]) >= 1
    r = httpx.get(f"{gateway}/v1/summaries/00000000-0000-4000-8000-000000000000", headers=AUTH, timeout=10)
    assert_problem(r, 503, "upstream-unavailable")


def test_readyz_names_the_missing_upstreams(gateway: str) -> None:
    r = httpx.get(f"{gateway}/readyz", timeout=10)
    assert r.status_code == 503
    assert r.json()["checks"] == {"realtime_svc": False, "async_svc": False}
