"""Child processes of the dev stack: each one a process group with its output in a log file."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from devstack.env import ROOT


class Proc:
    """A process group started in the repository root, its stdout and stderr in ``log``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        env: dict[str, str],
        log: Path,
        stop_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.log_path = log
        self.stop_timeout = stop_timeout
        self.port: int | None = None  # the port it serves on, where the launcher knows one
        self._log = open(log, "ab")  # closed by stop()
        self.p = subprocess.Popen(
            [str(a) for a in argv],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
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

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM to the group, SIGKILL after ``timeout`` (default: ``stop_timeout``)."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.p.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.p.wait(10)
        self._log.close()
        return self.p.returncode

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.p.wait(10)

    def cpu_s(self) -> float:
        """CPU seconds used so far by the process and its descendants (see ``cpu_seconds``)."""
        return cpu_seconds(self.p.pid)


def wait_until(
    pred: Callable[[], bool], timeout: float, what: str, proc: Proc | None = None, interval: float = 0.5
) -> None:
    """Poll ``pred`` until true; TimeoutError after ``timeout`` s, RuntimeError (with the log
    tail) as soon as ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.tail()}")
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}" + (f":\n{proc.tail()}" if proc else ""))


def http_ok(url: str) -> bool:
    """GET ``url`` answers 200."""
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


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
