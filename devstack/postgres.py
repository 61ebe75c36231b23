"""A throwaway PostgreSQL cluster (Debian's postgresql package) on a private port."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devstack.ports import port_open
from devstack.procs import wait_until


def pg_bin() -> Path | None:
    """The newest installed server's bin directory (initdb, postgres, createdb), if any."""
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / "initdb").exists():
            return base
    return None


@contextmanager
def postgres_cluster(pg: Path, port: int) -> Iterator[str]:
    """initdb + postgres on 127.0.0.1:``port`` (trust auth, user and database ``precis``, fsync
    off); yields its SQLAlchemy URL; stops the server and removes the data directory after."""
    # Not under pytest's tmp dir: that one is private to root, and the server runs as postgres.
    data = Path(tempfile.mkdtemp(prefix="precis-pg-"))
    user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres system user
        shutil.chown(data, "postgres", "postgres")
        user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*user, str(pg / "initdb"), "-D", str(data), "-U", "precis", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [
            *user,
            str(pg / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: port_open(port), 60, "postgres")
        subprocess.run(
            [*user, str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "precis", "precis"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+asyncpg://precis@127.0.0.1:{port}/precis"
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(data, ignore_errors=True)
