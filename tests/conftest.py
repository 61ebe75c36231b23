"""Session fixtures that start real components (Kafka, SMTP sink, PostgreSQL, Redis) for the suite."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from common.migrate import upgrade
from common.store import Database
from devstack import (
    PORTS,
    ROOT,
    KafkaPorts,
    child_env,
    pg_bin,
    postgres_cluster,
    start_kafka,
    start_smtp_sink,
)

# The suite's mode, set before any test builds settings: the services have no default PRECIS_ENV and
# refuse to start without one (common/settings.py). The stacks the tests start get it from
# devstack.child_env; a test that needs another mode sets it with monkeypatch.
os.environ["PRECIS_ENV"] = "test"


# Tests talk to this machine only: no name is looked up outside it (a DNS query to the machine's
# resolver already leaves it). Every in-process lookup goes through socket.getaddrinfo (asyncio's
# too), so a test that forgot its fake resolver fails here, naming the host, instead of asking the
# network. The processes the tests start only get loopback addresses and names.
_real_getaddrinfo = socket.getaddrinfo
_LOCAL_NAMES = {"localhost", "ip6-localhost", "ip6-loopback", socket.gethostname().lower()}


def _local_only_getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None:
        bare = name.strip("[]").rstrip(".").lower()
        try:
            ipaddress.ip_address(bare.split("%")[0])
        except ValueError:
            if bare not in _LOCAL_NAMES and not bare.endswith(".localhost"):
                raise socket.gaierror(socket.EAI_NONAME, f"tests resolve no outside name: {name!r}") from None
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _local_only_getaddrinfo


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real single-node KRaft broker, started by scripts/kafka.sh."""
    var = tmp_path_factory.mktemp("kafka-var")
    ports = KafkaPorts.allocate()
    proc = start_kafka(ports, child_env(var), var / "kafka.log")
    try:
        yield ports.bootstrap
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def smtp_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """The dev SMTP sink (aiosmtpd) as a process; yields (port, mail dir)."""
    var = tmp_path_factory.mktemp("smtp-var")
    port = PORTS.one()
    proc = start_smtp_sink(port, child_env(var), var / "smtp.log")
    try:
        yield port, var / "mail"
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway PostgreSQL cluster (Debian's postgresql package) on a private port."""
    if os.environ.get("PRECIS_TEST_DATABASE_URL"):
        yield os.environ["PRECIS_TEST_DATABASE_URL"]
        return
    pg = pg_bin()
    if pg is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries missing: .ci/run installs the postgresql package")
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql)")
    with postgres_cluster(pg, PORTS.one()) as url:
        yield url


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


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis (Debian's redis-server) on a private loopback port, no persistence; yields
    ``redis://127.0.0.1:<port>/0`` (the gateway's PRECIS_RATE_LIMIT_STORAGE_URI). A test that
    stops Redis starts its own with devstack.start_redis instead of stopping this one."""
    from devstack.redis import redis_bin, start_redis  # here: the fixture is appended as one block

    if redis_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server missing: .ci/run installs the redis-server package")
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    var = tmp_path_factory.mktemp("redis-var")
    port = PORTS.one()
    proc = start_redis(port, child_env(var), var / "redis.log", var / "data")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.stop()
