"""The Python services (gateway, realtime_svc, async_svc, worker, notifier) as processes, each
`python -m <service>` on its own port, the way the Procfile runs them."""

from __future__ import annotations

import sys
from pathlib import Path

from devstack.procs import Proc, http_ok, wait_until


def launch_service(module: str, port: int, env: dict[str, str], log: Path, name: str | None = None) -> Proc:
    """``python -m module`` with PRECIS_PORT=port; returns at once."""
    proc = Proc(name or module, [sys.executable, "-m", module], {**env, "PRECIS_PORT": str(port)}, log)
    proc.port = port
    return proc


def start_service(
    module: str,
    port: int,
    env: dict[str, str],
    log: Path,
    *,
    ready: str = "/healthz",
    timeout: float = 60,
    name: str | None = None,
) -> Proc:
    """``launch_service``, then until GET ``ready`` answers 200; stopped again if it does not."""
    proc = launch_service(module, port, env, log, name)
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}{ready}"), timeout, f"{proc.name} {ready}", proc)
    except (TimeoutError, RuntimeError):
        proc.stop()
        raise
    return proc
