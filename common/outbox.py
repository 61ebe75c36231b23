"""Transactional outbox relay.

A state change and the Kafka message announcing it are written in one database transaction
(``enqueue``); this relay publishes pending rows and marks them. A crash between commit and publish
therefore delays the message but never loses it, and a failed commit leaves no ghost message.

Every process that writes outbox rows runs a relay (async_svc, each worker), and any relay may
publish any row. So that two relays never publish the same row, a relay first *claims* a batch
(one conditional UPDATE, with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serializes writers),
publishes it outside any transaction (a broker outage never holds the store's write lock), then
marks it published. A relay that dies after claiming leaves rows whose claim expires after
``claim_ttl_s``; another relay publishes them then. Delivery stays at-least-once (a relay killed
between the broker's ack and the mark re-publishes), and consumers deduplicate by job id / event id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from common.metrics import OUTBOX_LAG, OUTBOX_PUBLISHED
from common.store import Database, OutboxMessage

log = logging.getLogger(__name__)


def enqueue(session: AsyncSession, topic: str, key: str, value: dict[str, Any]) -> None:
    """Add a message to the outbox inside the caller's transaction."""
    session.add(OutboxMessage(topic=topic, key=key, value=value))


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        producer: AIOKafkaProducer,
        *,
        poll_s: float = 0.5,
        batch: int = 200,
        claim_ttl_s: float = 60.0,
    ) -> None:
        self.db = db
        self.producer = producer
        self.poll_s = poll_s
        self.batch = batch
        self.claim_ttl = timedelta(seconds=claim_ttl_s)
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
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

    async def _claim(self) -> list:
        t = datetime.now(UTC)
        free = (
            select(OutboxMessage.id)
            .where(
                OutboxMessage.published_at.is_(None),
                or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < t),
            )
            .order_by(OutboxMessage.id)
            .limit(self.batch)
        )
        if not self.db.is_sqlite:
            free = free.with_for_update(skip_locked=True)
        async with self.db.transaction() as s:
            res = await s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(free.scalar_subquery()))
                .values(claimed_by=self.owner, claimed_until=t + self.claim_ttl)
                .returning(
                    OutboxMessage.id,
                    OutboxMessage.topic,
                    OutboxMessage.key,
                    OutboxMessage.value,
                    OutboxMessage.created_at,
                )
                .execution_options(synchronize_session=False)
            )
            return sorted(res.all(), key=lambda r: r.id)

    async def _publish_batch(self) -> int:
        rows = await self._claim()
        if not rows:
            OUTBOX_LAG.set(0)
            return 0

        # Send in id order (one producer, idempotent: per-partition order is kept) and wait for
        # every ack, bounded well inside the claim so no other relay takes these rows meanwhile.
        async def send_all() -> None:
            futures = [await self.producer.send(r.topic, key=r.key, value=r.value) for r in rows]
            await asyncio.gather(*futures)

        try:
            await asyncio.wait_for(send_all(), timeout=self.claim_ttl.total_seconds() / 3)
        except BaseException:
            # Broker away: hand the rows back at once (any relay retries them), then report.
            await asyncio.shield(self._unclaim([r.id for r in rows]))
            raise
        now = datetime.now(UTC)
        async with self.db.transaction() as s:
            await s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_([r.id for r in rows]), OutboxMessage.claimed_by == self.owner)
                .values(published_at=now, claimed_until=None)
                .execution_options(synchronize_session=False)
            )
        oldest = min(r.created_at for r in rows)
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        OUTBOX_LAG.set((now - oldest).total_seconds())
        OUTBOX_PUBLISHED.inc(len(rows))
        return len(rows)

    async def _unclaim(self, ids: list[int]) -> None:
        try:
            async with self.db.transaction() as s:
                await s.execute(
                    update(OutboxMessage)
                    .where(
                        OutboxMessage.id.in_(ids),
                        OutboxMessage.claimed_by == self.owner,
                        OutboxMessage.published_at.is_(None),
                    )
                    .values(claimed_until=None)
                    .execution_options(synchronize_session=False)
                )
        except Exception as exc:  # noqa: BLE001 - the claim then simply expires
            log.warning("outbox: could not release claims (%s); they expire in %s", exc, self.claim_ttl)

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
