"""Boot the whole stack exactly as `make run` does (scripts/run.sh under honcho), once per session."""

from __future__ import annotations

import hashlib
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.procs import Proc, http_ok, port_open, stack_env, wait_until

OFFSET = 20000
OTHER_KEY = "other-tenant-key"


@dataclass
class Stack:
    url: str
    var: Path
    proc: Proc
    dev_key: str = "precis-dev-key"
    other_key: str = OTHER_KEY

    def ports(self) -> list[int]:
        return [p + OFFSET for p in (8080, 8081, 8082, 8083, 8084, 8000, 8001, 8002, 9092, 1025)]

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.dev_key}"}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    var = tmp_path_factory.mktemp("stack-var")
    env = stack_env(
        var,
        OFFSET,
        PRECIS_SKIP_INSTALL="1",
        PRECIS_API_KEYS=json.dumps({hashlib.sha256(OTHER_KEY.encode()).hexdigest(): "other"}),
        PRECIS_READY_TIMEOUT="600",
    )
    busy = [p for p in Stack("", var, None).ports() if port_open(p)]  # type: ignore[arg-type]
    if busy:
        pytest.fail(f"ports {busy} are busy; is another test stack running?")
    t0 = time.monotonic()
    proc = Proc("stack", ["bash", "scripts/run.sh"], env, var / "stack.log")
    s = Stack(f"http://127.0.0.1:{8080 + OFFSET}", var, proc)
    try:
        wait_until(lambda: http_ok(f"{s.url}/readyz"), 600, "gateway /readyz", proc, interval=1.0)
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
