"""Start and stop the real components for tests, exactly as the project's scripts do."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def stack_env(var_dir: Path, offset: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # Ports of scripts/common.sh shifted by the offset; anything the caller set in the
    # environment for ports is dropped so common.sh recomputes it.
    for k in list(env):
        if k.startswith("PRECIS_") and k not in ("PRECIS_CACHE", "PRECIS_VENV"):
            del env[k]
    env.update(
        PRECIS_VAR_DIR=str(var_dir),
        PRECIS_PORT_OFFSET=str(offset),
        PRECIS_ENV="test",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Proc:
    """A process group started from a script, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log_path = log
        self._log = open(log, "ab")
        self.p = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def alive(self) -> bool:
        return self.p.poll() is None

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.p.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.p.wait(10)
        self._log.close()
        return self.p.returncode

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.p.wait(10)


def wait_until(
    pred: Callable[[], bool], timeout: float, what: str, proc: Proc | None = None, interval: float = 0.5
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.tail()}")
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}" + (f":\n{proc.tail()}" if proc else ""))


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_triton(env: dict[str, str], log: Path, http_port: int, timeout: float) -> Proc:
    """scripts/triton.sh (the real tritonserver) with ``env``; returns once /v2/health/ready
    answers. If it does not, the server is stopped and RuntimeError carries its log tail."""
    proc = Proc("triton", ["bash", "scripts/triton.sh"], env, log)
    try:
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{http_port}/v2/health/ready"),
            timeout,
            "Triton /v2/health/ready",
            proc,
            interval=1.0,
        )
    except (TimeoutError, RuntimeError) as exc:
        tail = proc.tail(80)
        proc.stop(timeout=40)
        raise RuntimeError(f"Triton did not become ready: {exc}\n--- log tail ---\n{tail}") from None
    return proc


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and all its descendants (benchmarks:
    what each stack process costs per request or per job); 0 for a process that is gone."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return total
    for pr in procs:
        try:
            t = pr.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total
