"""Several outbox relays on one store (async_svc + every worker run one) publish each row once:
the claim (UPDATE … RETURNING, FOR UPDATE SKIP LOCKED on PostgreSQL) keeps them apart. Without it
two relays published the same terminal event twice (found by test_faults)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select

from common import kafka
from common.outbox import OutboxRelay, enqueue
from common.settings import CommonSettings
from common.store import OutboxMessage

pytestmark = pytest.mark.faults


async def test_concurrent_relays_publish_each_row_once(db, kafka_broker):
    s = CommonSettings(kafka_bootstrap_servers=kafka_broker, env="test")
    await kafka.ensure_topics(s)
    run = uuid.uuid4().hex[:8]
    n = 300
    for start in range(0, n, 50):
        async with db.transaction() as tx:
            for i in range(start, start + 50):
                enqueue(tx, kafka.JOBS_DLQ, f"{run}-{i}", {"i": i})
    producers = [kafka.make_producer(s, f"relay-{k}") for k in range(3)]
    for p in producers:
        await p.start()
    relays = [OutboxRelay(db, p, batch=20) for p in producers]
    try:
        counts = await asyncio.gather(*(r.flush() for r in relays for _ in range(2)))
    finally:
        for p in producers:
            await p.stop()
    assert sum(counts) == n, counts
    async with db.session() as tx:
        left = (
            await tx.execute(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
            )
        ).scalar_one()
    assert left == 0

    c = AIOKafkaConsumer(bootstrap_servers=kafka_broker, enable_auto_commit=False)
    await c.start()
    try:
        tp = TopicPartition(kafka.JOBS_DLQ, 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        end = (await c.end_offsets([tp]))[tp]
        keys: Counter = Counter()
        while await c.position(tp) < end:
            for recs in (await c.getmany(timeout_ms=1000)).values():
                keys.update(r.key.decode() for r in recs if r.key and r.key.decode().startswith(run))
    finally:
        await c.stop()
    assert len(keys) == n and set(keys.values()) == {1}, f"{sum(v > 1 for v in keys.values())} rows published twice"
