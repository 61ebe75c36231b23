"""Port allocation for private stacks: no hand-picked offsets.

Every port comes from one allocator per process (``PORTS``), which

* hands out ports below the kernel's ephemeral range (32768-60999 by default, read from
  ``/proc/sys/net/ipv4/ip_local_port_range``): a client socket there can hold the port a server
  is about to bind (it once made Triton's bind fail);
* never hands out the same port twice in one run, so a port given to a component that is not
  listening yet (or to a test as "nothing listens here") is never given to another;
* bind-probes every port a component needs (all of them, before handing any out), on the IPv4
  and IPv6 wildcard addresses, without SO_REUSEADDR: what the servers will bind must be free;
* holds an advisory lock on ``$TMPDIR/precis-ports/<port>`` for each port it hands out, for the
  life of the process, so two runs on one machine (a test session and a benchmark) do not pick
  the same free port before either binds it.

The search starts at a random place in the range, so concurrent runs rarely even meet.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

LOW = 20000
"""Lowest port handed out: above every default port of `make run` (1025, 8000-8084, 9092-9093)."""


def ephemeral_low() -> int:
    """First port of the kernel's ephemeral (client socket) range."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts connections on ``host:port``."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def bindable(port: int) -> bool:
    """A server could bind ``port`` now (IPv4 and IPv6 wildcard, no SO_REUSEADDR)."""
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 on this machine
            continue
        with s:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind((addr, port))
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL and family == socket.AF_INET6:
                    continue  # IPv6 disabled
                return False
    return True


class PortAllocator:
    """Hands out free ports in ``[low, high)``, each at most once (see the module docstring)."""

    def __init__(self, low: int = LOW, high: int | None = None, lock_dir: Path | None = None) -> None:
        self.low = low
        self.high = min(high or ephemeral_low(), ephemeral_low())
        if self.high - self.low < 100:
            raise ValueError(f"port range [{self.low}, {self.high}) is too small")
        self._cursor = random.randrange(self.low, self.high)
        self._given: set[int] = set()
        self._locks: dict[int, int] = {}
        self._mutex = threading.Lock()
        self._lock_dir = lock_dir if lock_dir is not None else Path(tempfile.gettempdir()) / "precis-ports"
        try:
            if not self._lock_dir.is_dir():
                self._lock_dir.mkdir()
                self._lock_dir.chmod(0o1777)  # shared by every user's runs, like /tmp
        except OSError:
            self._lock_dir = None  # type: ignore[assignment]  # unlocked: this run's own uniqueness still holds

    @property
    def given(self) -> frozenset[int]:
        return frozenset(self._given)

    def take(self, n: int = 1) -> list[int]:
        """``n`` consecutive free ports (one component's ports, e.g. Triton's HTTP, gRPC, metrics)."""
        off = self.offset(range(n))
        return [off + i for i in range(n)]

    def one(self) -> int:
        """One free port (a server's, or an address where nothing listens)."""
        return self.take(1)[0]

    def offset(self, bases: Sequence[int]) -> int:
        """An offset that puts every ``base + offset`` in the range, free and never handed out
        before; those ports are handed out. For scripts that shift fixed default ports by one
        offset (scripts/common.sh's ``PRECIS_PORT_OFFSET``)."""
        bases = sorted(set(bases))
        if not bases:
            raise ValueError("no ports asked for")
        lo, hi = bases[0], bases[-1]
        first, last = self.low - lo, self.high - 1 - hi  # offsets that keep every port in range
        if last < first:
            raise ValueError(f"ports {lo}..{hi} do not fit in [{self.low}, {self.high}) with one offset")
        span = last - first + 1
        with self._mutex:
            start = (self._cursor - lo - first) % span
            for i in range(span):
                off = first + (start + i) % span
                ports = [b + off for b in bases]
                if self._claim(ports):
                    self._cursor = ports[-1] + 1 if ports[-1] + 1 < self.high else self.low
                    return off
        raise RuntimeError(f"no free ports for {bases} in [{self.low}, {self.high})")

    def _claim(self, ports: list[int]) -> bool:
        if any(p in self._given for p in ports) or not all(bindable(p) for p in ports):
            return False
        locked: list[int] = []
        for p in ports:
            if not self._lock(p):
                for q in locked:
                    os.close(self._locks.pop(q))
                return False
            locked.append(p)
        self._given.update(ports)
        return True

    def _lock(self, port: int) -> bool:
        if self._lock_dir is None:
            return True
        try:
            fd = os.open(self._lock_dir / str(port), os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError:
            return True  # a lock file of another user: the bind probe is all there is
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False  # another run holds it
        self._locks[port] = fd
        return True


PORTS = PortAllocator()
"""The allocator of this process: every port of every private stack it starts comes from it."""


def free_port() -> int:
    """A port from ``PORTS`` (free now, never handed out again in this run)."""
    return PORTS.one()
