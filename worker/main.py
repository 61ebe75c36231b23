"""Process entry: consumer loop + outbox relay + health/metrics server, SIGTERM drains."""

from __future__ import annotations

import asyncio
import logging
import signal

from fastapi import FastAPI

from common import kafka
from common.logs import setup_logging
from common.outbox import OutboxRelay
from common.serve import consumer_health_app, health_server
from common.store import Database
from common.tokenization import TokenCounter
from common.triton_client import SummarizerClient
from worker.config import WorkerSettings, get_settings
from worker.consumer import Worker
from worker.mapreduce import ModelCaller

log = logging.getLogger(__name__)


def health_app(worker: Worker, triton: SummarizerClient, relay: OutboxRelay) -> FastAPI:
    async def checks() -> dict[str, bool]:
        return {
            "consumer": worker.running,
            "database": await worker.db.ping(),
            "triton": await triton.ready(1.0),
            "outbox": relay.healthy,
        }

    return consumer_health_app("worker", checks)


async def amain(settings: WorkerSettings) -> None:
    db = Database(settings.database_url)
    counter = TokenCounter(settings.tokenizer_path)
    triton = SummarizerClient(settings.triton_grpc_url, settings.triton_model)
    model = ModelCaller(triton, settings.max_in_flight_calls, settings.triton_timeout_s, settings.call_retries)
    await kafka.ensure_topics(settings, timeout_s=120)
    producer = kafka.make_producer(settings, client_id="worker")
    await producer.start()
    relay = OutboxRelay(db, producer)
    relay.start()
    worker = Worker(settings, db, model, counter)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stopping.set)

    server = health_server(health_app(worker, triton, relay), settings.port or 8083)
    health = asyncio.create_task(server.serve())
    try:
        await worker.run()
    finally:
        await relay.stop()
        await producer.stop()
        server.should_exit = True
        await health
        await triton.close()
        await db.close()
        log.info("worker stopped")


def main() -> None:
    settings = get_settings()
    setup_logging(settings.service_name, settings.log_level)
    asyncio.run(amain(settings))
