"""`python -m common.migrate` as the chart runs it with the bundled PostgreSQL: several pods'
init containers at once, possibly before the server accepts connections."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from devstack import PORTS

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def _migrate(url: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "common.migrate"],
        env={**os.environ, "PRECIS_ENV": "test", "PRECIS_DATABASE_URL": url, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_migrations_take_turns(postgres_url):
    import psycopg2

    dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    name = f"m_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
        procs = [_migrate(url) for _ in range(4)]
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (_, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err[-2000:]
        with psycopg2.connect(dsn.rsplit("/", 1)[0] + f"/{name}") as conn:
            cur = conn.cursor()
            cur.execute("SELECT version_num FROM alembic_version")
            assert len(cur.fetchall()) == 1
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'jobs'")
            assert cur.fetchone()[0] == 1
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_waits_for_an_unreachable_server_then_fails_clearly():
    port = PORTS.one()  # nothing listens: every attempt is refused
    t0 = time.monotonic()
    p = _migrate(f"postgresql+asyncpg://precis@127.0.0.1:{port}/precis", PRECIS_MIGRATE_WAIT_S="3")
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0
    assert time.monotonic() - t0 >= 3  # it kept trying for the configured wait
    assert err.count("Retrying") >= 2, err[-1500:]
    assert "ConnectionRefusedError" in err or "Connect call failed" in err, err[-1500:]
