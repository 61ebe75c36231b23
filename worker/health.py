"""The worker's health server app: /healthz, /readyz (consumer, database, Triton, outbox), /metrics."""

from __future__ import annotations

from fastapi import FastAPI

from common.consumer import ConsumerLoop
from common.health import consumer_health_app
from common.outbox import OutboxRelay
from common.store import Database
from common.triton_client import SummarizerClient


def health_app(consumer: ConsumerLoop, db: Database, triton: SummarizerClient, relay: OutboxRelay) -> FastAPI:
    async def checks() -> dict[str, bool]:
        return {
            "consumer": consumer.running,
            "database": await db.ping(),
            "triton": await triton.ready(1.0),
            "outbox": relay.healthy,
        }

    return consumer_health_app("worker", checks)
