"""devstack's port allocator: free ports below the ephemeral range, never the same one twice."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from common.settings import DEV_INTERNAL_TOKEN_SECRET
from devstack import INTERNAL_TOKEN_SECRET, PortAllocator, child_env
from devstack.ports import bindable
from devstack.stack import DEFAULTS, StackPorts


def test_ports_are_unique_free_and_below_the_ephemeral_range(tmp_path: Path) -> None:
    a = PortAllocator(lock_dir=tmp_path)
    got = [p for _ in range(50) for p in a.take(3)] + [a.one() for _ in range(50)]
    assert len(got) == len(set(got)) == 200
    assert all(a.low <= p < a.high <= 32768 for p in got)


def test_a_bound_port_is_skipped(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        assert not bindable(taken)
    a = PortAllocator(lock_dir=tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", a.one() + 1))  # the next port the cursor would give
        s.listen()
        busy = s.getsockname()[1]
        assert busy not in a.take(1) and busy not in a.given


def test_two_allocators_sharing_a_lock_dir_never_agree(tmp_path: Path) -> None:
    a, b = PortAllocator(lock_dir=tmp_path), PortAllocator(lock_dir=tmp_path)
    b._cursor = a._cursor  # same starting point: only the locks keep them apart
    assert not set(a.take(20)) & set(b.take(20))


def test_offset_keeps_every_port_in_range(tmp_path: Path) -> None:
    a = PortAllocator(lock_dir=tmp_path)
    ports = StackPorts(a.offset(list(DEFAULTS.values())))
    shifted = [ports.of(v) for v in DEFAULTS]
    assert set(shifted) <= a.given and all(a.low <= p < a.high for p in shifted)
    assert ports.env()["PRECIS_GATEWAY_PORT"] == str(8080 + ports.offset)
    with pytest.raises(ValueError):
        a.offset([1, 60000])


def test_child_env_drops_the_callers_precis_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PRECIS_GATEWAY_PORT", "1")
    monkeypatch.setenv("PRECIS_MODEL_ENGINE", "transformers")
    monkeypatch.setenv("PRECIS_CACHE", "/cache")
    env = child_env(tmp_path, PRECIS_LOG_LEVEL="DEBUG")
    assert "PRECIS_GATEWAY_PORT" not in env and "PRECIS_MODEL_ENGINE" not in env
    assert env["PRECIS_CACHE"] == "/cache" and env["PRECIS_VAR_DIR"] == str(tmp_path)
    assert env["PRECIS_ENV"] == "test" and env["PRECIS_LOG_LEVEL"] == "DEBUG"
    assert child_env(inherit=("PRECIS_MODEL_",))["PRECIS_MODEL_ENGINE"] == "transformers"


def test_every_child_gets_this_processs_internal_token_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """gateway, realtime_svc and async_svc of one stack share one random secret (not the
    published dev default, not one from the caller's shell); tests sign direct calls with it."""
    monkeypatch.setenv("PRECIS_INTERNAL_TOKEN_SECRET", "from-the-shell")
    secrets = {
        child_env()["PRECIS_INTERNAL_TOKEN_SECRET"],
        child_env(PRECIS_LOG_LEVEL="DEBUG")["PRECIS_INTERNAL_TOKEN_SECRET"],
    }
    assert secrets == {INTERNAL_TOKEN_SECRET}
    assert len(INTERNAL_TOKEN_SECRET) >= 32 and INTERNAL_TOKEN_SECRET != DEV_INTERNAL_TOKEN_SECRET
