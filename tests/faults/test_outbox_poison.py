"""An outbox row the broker can never take no longer blocks every row after it (issue #14, item 9).

The relay published in id order and handed the whole batch back on any failure, so one record
over the size limit was retried for ever and nothing behind it (job messages, terminal events,
retries) reached Kafka again. Now such a row is set aside after ``max_attempts`` record-specific
failures and the rows after it go on, in order; an outage (here: a topic the broker does not
have, which times out like a broker that is away) never sets a row aside. Real broker, real store.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import select

from common import kafka
from common.metrics import OUTBOX_POISONED
from common.outbox import POISONED_PREFIX, SET_ASIDE_UNTIL, OutboxRelay, enqueue
from common.settings import CommonSettings
from common.store import OutboxMessage

pytestmark = pytest.mark.faults


async def _topic(bootstrap: str) -> str:
    name = f"precis.test.outbox-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    return name


async def _read(bootstrap: str, topic: str) -> list[dict]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await c.start()
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        end = (await c.end_offsets([tp]))[tp]
        out: list[dict] = []
        while await c.position(tp) < end:
            for recs in (await c.getmany(tp, timeout_ms=1000)).values():
                out.extend(kafka.loads(r.value) for r in recs)
        return out
    finally:
        await c.stop()


async def _rows(db, topic: str) -> list[OutboxMessage]:
    async with db.session() as s:
        return list(
            (await s.execute(select(OutboxMessage).where(OutboxMessage.topic == topic).order_by(OutboxMessage.id)))
            .scalars()
            .all()
        )


async def _until_published(db, topic: str, n: int, timeout_s: float = 90) -> None:
    async def published() -> int:
        return sum(r.published_at is not None for r in await _rows(db, topic))

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while await published() < n:
        assert loop.time() < deadline, f"only {await published()} of {n} good rows published"
        await asyncio.sleep(0.1)


# The producer refuses a record over its max_request_size (1 MiB, below the broker's own limit, so
# an oversized record never enters a batch: a batch the broker refuses would leave the idempotent
# producer out of sequence, OutOfOrderSequenceNumber on every later send; docs/security.md).
async def test_a_poisoned_row_is_set_aside_and_later_rows_go_on_in_order(db, kafka_broker):
    size, error = 2 * 1024 * 1024, "MessageSizeTooLargeError"
    s = CommonSettings(kafka_bootstrap_servers=kafka_broker, env="test")
    topic = await _topic(kafka_broker)
    async with db.transaction() as tx:
        for i in range(5):
            enqueue(tx, topic, f"k{i % 2}", {"i": i})
        enqueue(tx, topic, "k0", {"i": "poison", "blob": "x" * size})
        for i in range(5, 10):
            enqueue(tx, topic, f"k{i % 2}", {"i": i})
    before = OUTBOX_POISONED.labels(topic)._value.get()
    producer = kafka.make_producer(s, "relay-poison")
    await producer.start()
    relay = OutboxRelay(db, producer, poll_s=0.05, batch=4, max_attempts=3)
    relay.start()
    try:
        await _until_published(db, topic, 10)
    finally:
        await relay.stop()
        await producer.stop()

    rows = await _rows(db, topic)
    poisoned = [r for r in rows if r.value["i"] == "poison"]
    assert len(poisoned) == 1
    p = poisoned[0]
    assert p.published_at is None
    assert p.claimed_by is not None and p.claimed_by.startswith(f"{POISONED_PREFIX}{error}"), p.claimed_by
    assert p.claimed_until == SET_ASIDE_UNTIL
    assert OUTBOX_POISONED.labels(topic)._value.get() == before + 1
    # every good row once, in id order (one partition), and the poisoned one never
    assert [m["i"] for m in await _read(kafka_broker, topic)] == list(range(10))
    # and no relay takes it again
    again = OutboxRelay(db, producer, max_attempts=3)
    assert await again._claim() == []


async def test_an_outage_never_sets_a_row_aside(db, kafka_broker):
    """A record for a topic the broker lacks (auto-create is off) times out as a broker that is
    away does: the row is handed back every time, however often, and stays publishable."""
    s = CommonSettings(kafka_bootstrap_servers=kafka_broker, env="test")
    missing = f"precis.test.missing-{uuid.uuid4().hex[:8]}"
    async with db.transaction() as tx:
        enqueue(tx, missing, "k", {"i": 0})
    producer = kafka.make_producer(s, "relay-outage")
    await producer.start()
    relay = OutboxRelay(db, producer, claim_ttl_s=3, max_attempts=2)
    try:
        for _ in range(3):
            with pytest.raises(TimeoutError):
                await relay.flush()
    finally:
        await producer.stop()
    (row,) = await _rows(db, missing)
    assert row.published_at is None and row.claimed_until is None, (row.claimed_by, row.claimed_until)
    assert not (row.claimed_by or "").startswith(POISONED_PREFIX)
