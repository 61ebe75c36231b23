"""Process entry: consumer loop + outbox relay + health/metrics server, SIGTERM drains."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid

from common import kafka
from common.consumer import ConsumerLoop
from common.logs import setup_logging
from common.outbox import OutboxRelay
from common.serve import health_server
from common.store import Database
from common.tokenization import TokenCounter
from common.triton_client import SummarizerClient
from worker.config import WorkerSettings, get_settings
from worker.health import health_app
from worker.mapreduce import ModelCaller
from worker.runner import JobRunner

log = logging.getLogger(__name__)


def make_loop(settings: WorkerSettings, runner: JobRunner, owner: str) -> ConsumerLoop:
    consumer = kafka.make_consumer(
        settings,
        group_id=settings.group_id,
        client_id=f"worker-{owner}",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.session_timeout_ms // 5,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        max_poll_records=settings.max_poll_records,
        fetch_max_bytes=settings.fetch_max_bytes,
        max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
    )
    return ConsumerLoop(
        consumer, [kafka.JOBS, kafka.JOBS_RETRY], runner.handle_batch, drain_timeout_s=settings.drain_timeout_s
    )


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
    owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    runner = JobRunner(settings, db, model, counter, owner)
    consumer = make_loop(settings, runner, owner)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, consumer.stopping.set)

    server = health_server(health_app(consumer, db, triton, relay), settings.port or 8083)
    health = asyncio.create_task(server.serve())
    log.info("worker %s consuming %s, %s", owner, kafka.JOBS, kafka.JOBS_RETRY)
    try:
        await consumer.run()
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
