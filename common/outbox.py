"""Transactional outbox relay.

A state change and the Kafka message announcing it are written in one database transaction
(``enqueue``); this relay publishes pending rows and marks them. A crash between commit and publish
therefore delays the message but never loses it, and a failed commit leaves no ghost message.
Delivery is at-least-once: consumers deduplicate by job id / event id.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from common.metrics import OUTBOX_LAG, OUTBOX_PUBLISHED
from common.store import Database, OutboxMessage

log = logging.getLogger(__name__)


def enqueue(session: AsyncSession, topic: str, key: str, value: dict[str, Any]) -> None:
    """Add a message to the outbox inside the caller's transaction."""
    session.add(OutboxMessage(topic=topic, key=key, value=value))


class OutboxRelay:
    def __init__(self, db: Database, producer: AIOKafkaProducer, *, poll_s: float = 0.5, batch: int = 200) -> None:
        self.db = db
        self.producer = producer
        self.poll_s = poll_s
        self.batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.healthy = True

    def kick(self) -> None:
        """Publish now instead of at the next poll (called right after a commit)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        # Last flush so a clean shutdown leaves nothing pending for the next start.
        try:
            await asyncio.wait_for(self.flush(), timeout=5)
        except Exception:  # noqa: BLE001
            log.warning("outbox: final flush incomplete; rows stay pending for the next relay")

    async def flush(self) -> int:
        total = 0
        while True:
            n = await self._publish_batch()
            total += n
            if n < self.batch:
                return total

    async def _publish_batch(self) -> int:
        async with self.db.session() as s:
            q = select(OutboxMessage).where(OutboxMessage.published_at.is_(None)).order_by(OutboxMessage.id).limit(self.batch)
            if not self.db.is_sqlite:
                q = q.with_for_update(skip_locked=True)
            async with s.begin():
                rows = (await s.execute(q)).scalars().all()
                if not rows:
                    OUTBOX_LAG.set(0)
                    return 0
                futures = [await self.producer.send(r.topic, key=r.key, value=r.value) for r in rows]
                await asyncio.gather(*futures)
                now = datetime.now(UTC)
                await s.execute(update(OutboxMessage).where(OutboxMessage.id.in_([r.id for r in rows])).values(published_at=now))
                oldest = min(r.created_at for r in rows)
                if oldest.tzinfo is None:
                    oldest = oldest.replace(tzinfo=UTC)
                OUTBOX_LAG.set((now - oldest).total_seconds())
            OUTBOX_PUBLISHED.inc(len(rows))
            return len(rows)

    async def _cleanup(self) -> None:
        cutoff = datetime.now(UTC) - timedelta(days=1)
        async with self.db.transaction() as s:
            await s.execute(delete(OutboxMessage).where(OutboxMessage.published_at < cutoff))

    async def _run(self) -> None:
        backoff = self.poll_s
        loops = 0
        while True:
            try:
                await self.flush()
                self.healthy = True
                backoff = self.poll_s
                loops += 1
                if loops % 1000 == 0:
                    await self._cleanup()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep relaying; rows stay pending
                self.healthy = False
                log.warning("outbox: publish failed (%s); retrying in %.1fs", exc, backoff)
                backoff = min(backoff * 2, 10.0)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            except TimeoutError:
                pass
            self._wake.clear()
