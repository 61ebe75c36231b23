"""A throwaway Redis (Debian's redis-server package) on a private loopback port: the gateway's
rate-limit store (gateway/ratelimit.py). No persistence: no RDB snapshots, no AOF, data gone
with the process."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from devstack.ports import port_open
from devstack.procs import Proc, wait_until


def redis_bin() -> str | None:
    """The redis-server binary, if installed (apt-get install redis-server)."""
    return shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)


def redis_argv(server: str, port: int, workdir: Path) -> list[str]:
    """redis-server on 127.0.0.1:``port`` only, in the foreground, persisting nothing."""
    return [
        server,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--protected-mode", "yes",
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--dir", str(workdir),
        "--loglevel", "warning",
    ]  # fmt: skip


def launch_redis(port: int, env: dict[str, str], log: Path, workdir: Path, name: str = "redis") -> Proc:
    """redis-server on ``port``; returns at once. RuntimeError when it is not installed."""
    server = redis_bin()
    if server is None:
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    proc = Proc(name, redis_argv(server, port, workdir), env, log)
    proc.port = port
    return proc


def start_redis(port: int, env: dict[str, str], log: Path, workdir: Path, timeout: float = 30) -> Proc:
    """``launch_redis``, then until the port accepts connections."""
    proc = launch_redis(port, env, log, workdir)
    try:
        wait_until(lambda: port_open(port), timeout, "redis", proc)
    except (TimeoutError, RuntimeError):
        proc.stop()
        raise
    return proc


def exec_redis() -> None:
    """`make run` (Procfile "redis"): replace this process by redis-server on $PRECIS_REDIS_PORT,
    working directory $PRECIS_VAR_DIR/redis (nothing is written there: no persistence)."""
    server = redis_bin()
    if server is None:
        raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
    workdir = Path(os.environ.get("PRECIS_VAR_DIR", "var")) / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    os.execv(server, redis_argv(server, int(os.environ.get("PRECIS_REDIS_PORT", "6379")), workdir))
