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

A row the broker can never take (a record over the size limit, a value the serializer refuses)
once blocked every later row: the relay retried the same batch for ever. Now a row that fails
for a reason of its own (``RECORD_ERRORS``; an outage never counts) ``max_attempts`` times in a
row is *set aside*: ``claimed_by = "poisoned: <reason>"`` and ``claimed_until`` far in the future,
so no relay claims it again, with an error log and ``precis_outbox_poisoned_total``; the rows
after it go on in order. No schema change: the claim columns carry the mark (docs/security.md
says how to list and release such rows).
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
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from common.metrics import OUTBOX_LAG, OUTBOX_POISONED, OUTBOX_PUBLISHED
from common.store import Database, OutboxMessage

log = logging.getLogger(__name__)

# Failures that belong to one record, not to the broker's health: over the producer's or the
# broker's size limit, refused as corrupt or for its topic name, or not serializable (the
# serializers raise TypeError/ValueError). Anything else (connection lost, timeouts, leader
# changes) is an outage: the batch is handed back and no row is blamed.
RECORD_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidTopicError,
    TypeError,
    ValueError,
)
POISONED_PREFIX = "poisoned: "
# claimed_until of a set-aside row: never expires, so no relay claims it again.
SET_ASIDE_UNTIL = datetime(9999, 1, 1, tzinfo=UTC)


class RecordFailed(Exception):
    """One row failed for a reason of its own; it is retried (and set aside after max_attempts)."""


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
        max_attempts: int = 5,
    ) -> None:
        self.db = db
        self.producer = producer
        self.poll_s = poll_s
        self.batch = batch
        self.claim_ttl = timedelta(seconds=claim_ttl_s)
        self.max_attempts = max_attempts
        # Consecutive record-specific failures per row id, in this relay (kept in memory: no
        # schema change; a restart or another relay starts counting again, which only delays
        # setting the row aside, by at most max_attempts tries each).
        self._failures: dict[int, int] = {}
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
        # A row the producer refuses at once stops the batch there: the rows after it wait, so
        # good rows still go out in order while it is retried.
        futures: list[tuple[Any, asyncio.Future]] = []
        refused: tuple[Any, BaseException] | None = None

        async def send_all() -> list[Any]:
            nonlocal refused
            for r in rows:
                try:
                    futures.append((r, await self.producer.send(r.topic, key=r.key, value=r.value)))
                except RECORD_ERRORS as exc:
                    refused = (r, exc)
                    break
            return await asyncio.gather(*(f for _, f in futures), return_exceptions=True)

        try:
            results = await asyncio.wait_for(send_all(), timeout=self.claim_ttl.total_seconds() / 3)
        except BaseException:
            # Broker away: hand the rows back at once (any relay retries them), then report.
            await asyncio.shield(self._unclaim([r.id for r in rows]))
            raise
        acked = [r for (r, _), res in zip(futures, results, strict=True) if not isinstance(res, BaseException)]
        failed = [(r, res) for (r, _), res in zip(futures, results, strict=True) if isinstance(res, BaseException)]
        if refused is not None:
            failed.append(refused)
        now = datetime.now(UTC)
        if acked:
            async with self.db.transaction() as s:
                await s.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id.in_([r.id for r in acked]), OutboxMessage.claimed_by == self.owner)
                    .values(published_at=now, claimed_until=None)
                    .execution_options(synchronize_session=False)
                )
            for r in acked:
                self._failures.pop(r.id, None)
            oldest = min(r.created_at for r in acked)
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=UTC)
            OUTBOX_LAG.set((now - oldest).total_seconds())
            OUTBOX_PUBLISHED.inc(len(acked))
        if failed:
            await self._settle_failed(failed, [r for r in rows if r not in acked])
        return len(acked)

    async def _settle_failed(self, failed: list[tuple[Any, BaseException]], pending: list[Any]) -> None:
        """Rows of a batch that did not go: all handed back, except a first failed row whose own
        fault it is (RECORD_ERRORS) for the ``max_attempts``-th time in a row, which is set aside.
        Only the first failed row is blamed: the others may have shared its broker batch."""
        first, exc = min(failed, key=lambda f: f[0].id)
        outage = next((e for _, e in failed if not isinstance(e, RECORD_ERRORS)), None)
        if outage is None:
            n = self._failures.get(first.id, 0) + 1
            self._failures[first.id] = n
            if n >= self.max_attempts:
                await self._set_aside(first, exc)
                pending = [r for r in pending if r.id != first.id]
        await asyncio.shield(self._unclaim([r.id for r in pending]))
        if outage is not None:
            raise outage
        if first.id in self._failures:
            raise RecordFailed(
                f"row {first.id} ({first.topic}) failed {self._failures[first.id]} of {self.max_attempts} times: "
                f"{type(exc).__name__}: {exc}"
            )

    async def _set_aside(self, row: Any, exc: BaseException) -> None:
        reason = f"{POISONED_PREFIX}{type(exc).__name__}: {exc}"[:128]
        async with self.db.transaction() as s:
            await s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == row.id, OutboxMessage.claimed_by == self.owner)
                .values(claimed_by=reason, claimed_until=SET_ASIDE_UNTIL)
                .execution_options(synchronize_session=False)
            )
        self._failures.pop(row.id, None)
        OUTBOX_POISONED.labels(row.topic).inc()
        log.error(
            "outbox: row %d (topic %s, key %s) set aside after %d failed attempts, later rows go on: %s: %s",
            row.id,
            row.topic,
            row.key,
            self.max_attempts,
            type(exc).__name__,
            exc,
        )

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
