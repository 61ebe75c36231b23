"""Boot the whole stack exactly as `make run` does (scripts/run.sh under honcho: two Tritons,
realtime and batch, so a realtime test never waits behind earlier tests' async jobs), once per
session."""

from __future__ import annotations

import hashlib
import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack import Proc, StackPorts, child_env, launch_stack, port_open, wait_stack

OTHER_KEY = "other-tenant-key"


@dataclass
class Stack:
    url: str
    var: Path
    proc: Proc
    port_map: StackPorts
    dev_key: str = "precis-dev-key"
    other_key: str = OTHER_KEY

    def ports(self) -> list[int]:
        p = self.port_map
        return [*p.services, *p.triton, p.kafka, p.smtp, p.of("PRECIS_REDIS_PORT")]

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.dev_key}"}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    var = tmp_path_factory.mktemp("stack-var")
    env = child_env(
        var,
        PRECIS_SKIP_INSTALL="1",
        PRECIS_API_KEYS=json.dumps({hashlib.sha256(OTHER_KEY.encode()).hexdigest(): "other"}),
        PRECIS_READY_TIMEOUT="600",
        # async_svc's retention sweeper every second, so tests/e2e/test_listing.py sees it act
        PRECIS_RETENTION_SWEEP_INTERVAL_S="1",
        # `make run` starts its local Redis for this, and the gateway's limits count there
        PRECIS_RATE_LIMIT_STORAGE_URI="redis",
        # The fuzz run (test_api_fuzz.py) and the 401 tests send hundreds of requests without a
        # valid key from 127.0.0.1: at the default 20 a minute that address would be locked out
        # for every later test. The lockout itself is tested on its own gateways
        # (tests/security/test_rate_limits.py).
        PRECIS_RATE_LIMIT_FAILED_AUTH_PER_MINUTE="1000000",
    )
    with running_stack(var, env) as s:
        yield s


@contextmanager
def running_stack(var: Path, env: dict[str, str]) -> Iterator[Stack]:
    """The stack booted by scripts/run.sh, as `make run` boots it, on ports of its own (every
    port free and this run's alone); on exit stopped as Ctrl-C stops `make run`, which must
    leave no port open."""
    ports = StackPorts.allocate()
    t0 = time.monotonic()
    proc = launch_stack(ports, env, var / "stack.log")
    s = Stack(ports.url, var, proc, ports)
    try:
        wait_stack(proc, ports, 600)
        print(f"\nstack ready in {time.monotonic() - t0:.1f}s")
        yield s
    finally:
        # Like Ctrl-C/SIGTERM on `make run`: signal the script only; it must stop everything.
        proc.p.send_signal(signal.SIGTERM)
        try:
            proc.p.wait(60)
        except Exception:  # noqa: BLE001
            proc.kill()
        left = [p for p in s.ports() if port_open(p)]
        if left:
            print(proc.tail(80))
        proc.stop()
        # `make run` promise: SIGTERM stops every component, leaving no process behind.
        assert not left, f"ports still open after stopping the stack: {left}"
