"""Alembic environment (async engine). Run through ``python -m common.migrate``."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from common.store.models import Base

config = context.config
target_metadata = Base.metadata
MIGRATION_LOCK_ID = 0x70726563  # "prec": any constant every migrating process agrees on


def _do_run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Several pods may migrate at once (the chart's init containers with the bundled
            # PostgreSQL): one transaction-scoped lock makes them take turns, and each later one
            # finds the schema at head and does nothing.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
        context.run_migrations()


async def _run_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:  # common.migrate always sets it; a bare `alembic upgrade` must say what is missing
        raise RuntimeError("sqlalchemy.url is not set (run migrations through python -m common.migrate)")
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        await conn.run_sync(_do_run)
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
