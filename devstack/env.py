"""The environment of every child process the dev stack starts (tests and benchmarks alike)."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: the working directory of every child process."""

_ALWAYS_INHERITED = ("PRECIS_CACHE", "PRECIS_VENV")

# One random internal token secret per test/bench process, given to every child (gateway,
# realtime_svc, async_svc sign and verify with it; common/internal_auth.py). Not the documented
# dev default: a launcher that failed to pass it would then show up as a refused internal call.
# Tests that call an internal service directly sign with it (common.internal_auth.InternalTokenAuth).
INTERNAL_TOKEN_SECRET = secrets.token_urlsafe(32)


def child_env(var_dir: Path | None = None, *, inherit: Iterable[str] = (), **extra: str) -> dict[str, str]:
    """This process's environment for a child: every ``PRECIS_*`` variable is dropped (a port or
    URL set in the caller's shell must not leak into a private stack) except ``PRECIS_CACHE``,
    ``PRECIS_VENV`` and names starting with a prefix in ``inherit``; then ``PRECIS_VENV`` (the venv
    running this process, when unset), ``PRECIS_ENV=test``, ``PYTHONPATH`` (the repository root),
    ``PYTHONUNBUFFERED``, ``PRECIS_INTERNAL_TOKEN_SECRET`` (:data:`INTERNAL_TOKEN_SECRET`),
    ``PRECIS_VAR_DIR`` (when ``var_dir`` is given) and ``extra`` are set."""
    keep = tuple(inherit)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PRECIS_") or k in _ALWAYS_INHERITED or (keep and k.startswith(keep))
    }
    if "PRECIS_VENV" not in env and sys.prefix != sys.base_prefix:
        env["PRECIS_VENV"] = sys.prefix  # the venv running this process also runs the children
    env.update(
        PRECIS_ENV="test",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        PRECIS_INTERNAL_TOKEN_SECRET=INTERNAL_TOKEN_SECRET,
    )
    if var_dir is not None:
        env["PRECIS_VAR_DIR"] = str(var_dir)
    env.update(extra)
    return env
