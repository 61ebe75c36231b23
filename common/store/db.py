"""Engine and sessions. One :class:`Database` per process, owned by the service's lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.engine.url import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets readers run beside the single writer; busy_timeout makes concurrent writers from
    # several local processes (async_svc, worker, notifier) wait instead of failing. FULL syncs the
    # WAL at every commit, so a 202 (job committed) survives a power cut too, not only a crash;
    # intake's group commit (async_svc/intake.py) shares that fsync among a burst's jobs.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _cancel_is_not_a_disconnect(ctx: ExceptionContext) -> None:
    """SQLite: a task cancelled during a statement keeps its connection, so the transaction is
    rolled back and the connection goes back to the pool.

    SQLAlchemy treats a CancelledError inside a statement as a disconnect and invalidates the
    connection. With aiosqlite that can drop the sqlite3 connection without closing it, and the
    transaction stays open with SQLite's one write lock. Every later writer of every process then
    gets "database is locked" until the process exits. CI hit this (a job stuck in
    ``cancelling``, 500s, readyz 503). tests/integration/test_store_cancellation.py reproduces it
    within about a hundred cancels without this handler.

    Keeping the connection is safe for aiosqlite. Its one thread per connection runs calls in
    order, so the session's rollback runs after the interrupted statement; nothing is half-sent.
    asyncpg is different: a cancelled query leaves the protocol mid-stream, so PostgreSQL
    connections keep SQLAlchemy's default and are invalidated (and the server rolls back)."""
    if isinstance(ctx.original_exception, (asyncio.CancelledError, asyncio.TimeoutError)):
        ctx.is_disconnect = False


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict = {"echo": echo}
        if self.is_sqlite:
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "handle_error", _cancel_is_not_a_disconnect)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as s:
            yield s

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as s, s.begin():
            yield s

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - readiness only reports
            return False

    async def close(self) -> None:
        await self.engine.dispose()
