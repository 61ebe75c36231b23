"""Kafka clients (aiokafka): producer and consumer factories, topic creation, topic audits.

The topic names live in :mod:`common.topics`; they are re-exported here because most callers
use them together with a client (``kafka.make_consumer(s, kafka.JOBS, ...)``)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from common.settings import KafkaSettings
from common.topics import EVENTS, JOBS, JOBS_DLQ, JOBS_RETRY, TopicSpec, topic_specs

__all__ = [
    "EVENTS",
    "JOBS",
    "JOBS_DLQ",
    "JOBS_RETRY",
    "TopicSpec",
    "dumps",
    "ensure_topics",
    "loads",
    "make_consumer",
    "make_producer",
    "read_topic",
    "topic_specs",
]

log = logging.getLogger(__name__)


def _security_kwargs(s: KafkaSettings) -> dict[str, Any]:
    kw: dict[str, Any] = {"security_protocol": s.kafka_security_protocol}
    if s.kafka_sasl_mechanism:
        kw["sasl_mechanism"] = s.kafka_sasl_mechanism
        kw["sasl_plain_username"] = s.kafka_sasl_username
        kw["sasl_plain_password"] = s.kafka_sasl_password.get_secret_value() if s.kafka_sasl_password else None
    if s.kafka_security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        kw["ssl_context"] = create_ssl_context()
    return kw


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def loads(raw: bytes) -> Any:
    return json.loads(raw)


def make_producer(s: KafkaSettings, client_id: str) -> AIOKafkaProducer:
    # acks=all + idempotence: a send that returned is on every in-sync replica, once.
    return AIOKafkaProducer(
        bootstrap_servers=s.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=15000,
        # Below the broker's message.max.bytes (1048588 by default): an oversized record is refused
        # here, before it joins a batch, and the outbox sets it aside (common/outbox.py). A batch the
        # broker refused would leave the idempotent producer out of sequence for every later send.
        max_request_size=1048576,
        key_serializer=lambda k: k.encode() if isinstance(k, str) else k,
        value_serializer=dumps,
        **_security_kwargs(s),
    )


def make_consumer(s: KafkaSettings, *topics: str, group_id: str, client_id: str, **kw: Any) -> AIOKafkaConsumer:
    # Manual commits only: offsets move after the effect is durable (at-least-once delivery).
    # Fetches are bounded in bytes (aiokafka's defaults: 50 MB per fetch, 1 MB per partition):
    # the platform's records are small (claim-check: the documents stay in the store), so 4 MB
    # per fetch is plenty and bounds what a poll buffers. Callers may pass their own.
    kw.setdefault("fetch_max_bytes", 4 * 1024 * 1024)
    kw.setdefault("max_partition_fetch_bytes", 1024 * 1024)
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=s.kafka_bootstrap_servers,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **_security_kwargs(s),
        **kw,
    )


async def ensure_topics(s: KafkaSettings, timeout_s: float = 60.0) -> None:
    """Create the platform's topics if missing (idempotent), waiting for the broker to come up."""
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_exponential(multiplier=0.2, max=2),
        retry=retry_if_exception_type((KafkaError, OSError, asyncio.TimeoutError)),
        reraise=True,
    ):
        with attempt:
            admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap_servers, **_security_kwargs(s))
            await admin.start()
            try:
                existing = set(await admin.list_topics())
                missing = [
                    NewTopic(
                        t.name,
                        num_partitions=t.partitions,
                        replication_factor=s.kafka_replication_factor,
                        topic_configs=t.config,
                    )
                    for t in topic_specs(s)
                    if t.name not in existing
                ]
                if missing:
                    try:
                        await admin.create_topics(missing)
                    except TopicAlreadyExistsError:
                        pass
                    log.info("created topics %s", [t.name for t in missing])
            finally:
                await admin.close()


async def read_topic(bootstrap_servers: str, topic: str) -> list[Any]:
    """Every message of ``topic`` from the beginning up to its current end (group-less consumer,
    nothing committed): for audits in tests and benchmarks."""
    from aiokafka import TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await c.start()
    try:
        await c._client.force_metadata_update()
        parts = [TopicPartition(topic, p) for p in (c.partitions_for_topic(topic) or set())]
        c.assign(parts)
        await c.seek_to_beginning(*parts)
        end = await c.end_offsets(parts)
        out: list[Any] = []

        async def behind() -> bool:
            return any([await c.position(tp) < end[tp] for tp in parts])

        while await behind():
            for recs in (await c.getmany(timeout_ms=1000, max_records=5000)).values():
                out.extend(loads(r.value) for r in recs)
        return out
    finally:
        await c.stop()
