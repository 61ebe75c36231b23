"""async_svc HTTP API (internal; only the gateway calls it).

Thin wiring: the lifespan owns the database, the Kafka producer, the outbox relay and the intake
group committer (async_svc/deps.py holds the state), the routers the endpoints
(async_svc/routers/).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from async_svc.config import get_settings
from async_svc.deps import State
from async_svc.intake import GroupCommitter
from async_svc.routers import health, jobs, throughput
from common import kafka
from common.appstate import service_app, set_state
from common.logs import setup_logging
from common.outbox import OutboxRelay
from common.store import Database
from common.store.retention import RetentionSweeper

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    setup_logging(settings.service_name, settings.log_level)
    db = Database(settings.database_url)
    producer = kafka.make_producer(settings, client_id="async_svc")
    await kafka.ensure_topics(settings, timeout_s=120)
    await producer.start()
    relay = OutboxRelay(db, producer, poll_s=settings.outbox_poll_s)
    relay.start()
    committer = GroupCommitter(
        db,
        max_batch=settings.intake_max_batch,
        fault=_fault_hook(settings.fault_inject),
        quota=settings.tenant_quota(),
    )
    committer.start()
    # Retention runs here, in every async_svc replica (safe: each batch is a conditional update,
    # SKIP LOCKED on PostgreSQL; common/store/retention.py), not in the worker: it needs the store
    # only, and the worker's event loop is for model calls and heartbeats.
    sweeper = RetentionSweeper(
        db,
        settings.retention,
        batch=settings.retention_sweep_batch,
        interval_s=settings.retention_sweep_interval_s,
    )
    sweeper.start()
    set_state(app, State(settings, db, relay, committer))
    log.info("async_svc ready")
    try:
        yield
    finally:
        await sweeper.stop()
        await committer.stop()
        await relay.stop()
        await producer.stop()
        await db.close()


def _fault_hook(mode: str) -> Callable[[str], None] | None:
    """tests/faults: die by SIGKILL at the named point of job creation (nothing runs after it)."""
    if not mode:
        return None

    def hit(point: str) -> None:
        if point == mode:
            log.warning("fault injection: SIGKILL at %s", point)
            os.kill(os.getpid(), signal.SIGKILL)

    return hit


def create_app() -> FastAPI:
    return service_app("async_svc", "Précis async_svc", lifespan, [jobs.router, throughput.router, health.router])


app = create_app()
