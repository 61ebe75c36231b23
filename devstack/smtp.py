"""The development SMTP sink (scripts/smtp_sink.py, aiosmtpd): mail as .eml files under
``$PRECIS_VAR_DIR/mail``."""

from __future__ import annotations

import sys
from pathlib import Path

from devstack.ports import port_open
from devstack.procs import Proc, wait_until


def launch_smtp_sink(port: int, env: dict[str, str], log: Path, name: str = "smtp") -> Proc:
    """scripts/smtp_sink.py on ``port`` (mail under env's PRECIS_VAR_DIR); returns at once."""
    proc = Proc(name, [sys.executable, "scripts/smtp_sink.py"], {**env, "PRECIS_SMTP_PORT": str(port)}, log)
    proc.port = port
    return proc


def start_smtp_sink(port: int, env: dict[str, str], log: Path, timeout: float = 30) -> Proc:
    """``launch_smtp_sink``, then until the port accepts connections."""
    proc = launch_smtp_sink(port, env, log)
    try:
        wait_until(lambda: port_open(port), timeout, "smtp sink", proc)
    except (TimeoutError, RuntimeError):
        proc.stop()
        raise
    return proc
