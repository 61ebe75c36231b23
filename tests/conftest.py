"""Session fixtures that start real components (Kafka, SMTP sink, PostgreSQL) for the suite."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from common.migrate import upgrade
from common.store import Database
from tests.procs import ROOT, Proc, port_open, stack_env, wait_until

KAFKA_OFFSET = 21000  # kafka on 30092, controller 30093


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real single-node KRaft broker, started by scripts/kafka.sh."""
    var = tmp_path_factory.mktemp("kafka-var")
    env = stack_env(var, KAFKA_OFFSET)
    port = 9092 + KAFKA_OFFSET
    if port_open(port):
        pytest.fail(f"port {port} is busy: another test broker is running")
    proc = Proc("kafka", ["bash", "scripts/kafka.sh"], env, var / "kafka.log")
    try:
        wait_until(lambda: port_open(port), 120, "kafka broker port", proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def smtp_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """The dev SMTP sink (aiosmtpd) as a process; yields (port, mail dir)."""
    var = tmp_path_factory.mktemp("smtp-var")
    port = 1025 + KAFKA_OFFSET
    env = stack_env(var, KAFKA_OFFSET, PRECIS_SMTP_PORT=str(port))
    proc = Proc("smtp", [sys.executable, "scripts/smtp_sink.py"], env, var / "smtp.log")
    try:
        wait_until(lambda: port_open(port), 30, "smtp sink", proc)
        yield port, var / "mail"
    finally:
        proc.stop()


def _pg_bin() -> Path | None:
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / "initdb").exists():
            return base
    return None


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway PostgreSQL cluster (Debian's postgresql package) on a private port."""
    if os.environ.get("PRECIS_TEST_DATABASE_URL"):
        yield os.environ["PRECIS_TEST_DATABASE_URL"]
        return
    pg = _pg_bin()
    if pg is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries missing: .ci/run installs the postgresql package")
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql)")
    # Not under pytest's tmp dir: that one is private to root, and the server runs as postgres.
    data = Path(tempfile.mkdtemp(prefix="precis-pg-"))
    port = 5432 + KAFKA_OFFSET
    user = []
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


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


STORE_TABLES = ("notifications", "chunk_results", "outbox", "jobs")  # children first


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request, tmp_path):
    """The job store, migrated with Alembic: a fresh SQLite file, or the session's PostgreSQL
    cluster emptied for this test (same code and migrations on both)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'precis.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    await asyncio.to_thread(upgrade, url)
    d = Database(url)
    if request.param == "postgres":  # one cluster for the session: start each test clean
        async with d.transaction() as s:
            for table in STORE_TABLES:
                await s.execute(text(f"DELETE FROM {table}"))
    yield d
    await d.close()
