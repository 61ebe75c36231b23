"""Retention: a finished job's document, chunk checkpoints and summary are deleted a configurable
time after it finished, leaving a tombstone row.

* ``expires_at`` is stamped by the terminal transition itself (``common/store/transitions.py``:
  terminal time + ``PRECIS_RETENTION_DAYS``), so the job view shows it from the first answer on.
* From ``expires_at`` on the API treats the job as gone (410 on ``GET``), whether or not the
  sweeper has run yet: the sweeper only reclaims the space.
* :class:`RetentionSweeper` (run by async_svc's lifespan) clears ``document``, ``summary``,
  ``metadata``, ``notify`` and ``error_detail``, deletes the chunk checkpoints and sets
  ``expired_at``. The row stays (id, tenant, status, timestamps, error type, expired_at).

Safe with several replicas and idempotent: each batch is one conditional ``UPDATE … WHERE
expired_at IS NULL … RETURNING id`` over a sub-select of due rows (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so two sweepers take different rows; SQLite serializes writers and the condition
makes the loser's update match nothing), and only the ids that update returned have their
checkpoints deleted, in the same transaction.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import cast

from pydantic import Field
from sqlalchemy import Table, bindparam, delete, null, select, update

from common.schemas import TERMINAL_STATES
from common.settings import PrecisSettings
from common.store.db import Database
from common.store.models import ChunkResult, Job

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 30.0
DEFAULT_RETENTION = timedelta(days=DEFAULT_RETENTION_DAYS)


class RetentionSettings(PrecisSettings):
    """How long a finished job's document and summary are kept: read by every process that makes
    a job terminal (async_svc cancels queued jobs, the worker finishes the others)."""

    # Fractions are allowed (0.5 = 12 hours); tests use seconds' worth.
    retention_days: float = Field(default=DEFAULT_RETENTION_DAYS, gt=0, le=36500)

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.retention_days)


class SweeperSettings(RetentionSettings):
    """The sweeper's pace (async_svc, which runs it)."""

    retention_sweep_interval_s: float = Field(default=60.0, gt=0)
    retention_sweep_batch: int = Field(default=500, ge=1, le=10_000)


def is_expired(job: Job, now: datetime | None = None) -> bool:
    """Swept already, or past its ``expires_at`` (the sweeper may not have come by yet)."""
    if job.expired_at is not None:
        return True
    return job.expires_at is not None and job.expires_at <= (now or datetime.now(UTC))


class RetentionSweeper:
    def __init__(
        self, db: Database, retention: timedelta = DEFAULT_RETENTION, *, batch: int = 500, interval_s: float = 60.0
    ) -> None:
        self.db = db
        self.retention = retention
        self.batch = batch
        self.interval_s = interval_s
        self._task: asyncio.Task | None = None

    async def stamp_unstamped(self, now: datetime | None = None) -> int:
        """Give ``expires_at`` (finish time + retention) to finished jobs that have none: rows
        finished before migration 0003, or by a process that does not stamp (a rolling upgrade).
        Conditional on ``expires_at IS NULL``, so a stamp is never moved."""
        async with self.db.transaction() as s:
            rows = (
                await s.execute(
                    select(Job.id, Job.finished_at)
                    .where(Job.expires_at.is_(None), Job.status.in_(TERMINAL_STATES), Job.finished_at.is_not(None))
                    .limit(self.batch)
                )
            ).all()
            if not rows:
                return 0
            t = cast(Table, Job.__table__)  # Core: one executemany UPDATE, each row its own value
            await s.execute(
                update(t)
                .where(t.c.id == bindparam("b_id"), t.c.expires_at.is_(None))
                .values(expires_at=bindparam("b_expires")),
                [{"b_id": r.id, "b_expires": r.finished_at + self.retention} for r in rows],
            )
            return len(rows)

    async def expire_batch(self, now: datetime | None = None) -> list[str]:
        """Tombstone up to ``batch`` due jobs; returns the ids this call expired (each id is
        returned by exactly one call, whatever the number of sweepers)."""
        t = now or datetime.now(UTC)
        due = (
            select(Job.id)
            .where(Job.expires_at <= t, Job.expired_at.is_(None), Job.status.in_(TERMINAL_STATES))
            .order_by(Job.expires_at)
            .limit(self.batch)
        )
        if not self.db.is_sqlite:
            due = due.with_for_update(skip_locked=True)
        async with self.db.transaction() as s:
            ids = list(
                (
                    await s.execute(
                        update(Job)
                        .where(Job.id.in_(due.scalar_subquery()), Job.expired_at.is_(None))
                        .values(
                            document="",
                            summary=None,
                            metadata_=null(),  # SQL NULL, not the JSON value null
                            notify=null(),
                            error_detail=None,
                            expired_at=t,
                            updated_at=t,
                        )
                        .returning(Job.id)
                        .execution_options(synchronize_session=False)
                    )
                ).scalars()
            )
            if ids:
                await s.execute(delete(ChunkResult).where(ChunkResult.job_id.in_(ids)))
        return ids

    async def sweep(self, now: datetime | None = None) -> int:
        """Stamp, then expire every due job, batch by batch. Returns how many were expired."""
        while await self.stamp_unstamped(now) == self.batch:
            pass
        total = 0
        while True:
            n = len(await self.expire_batch(now))
            total += n
            if n < self.batch:
                if total:
                    log.info("retention: expired %d job(s)", total)
                return total

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention-sweeper")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the next round tries again; nothing is half done
                log.warning("retention: sweep failed (%s); retrying in %.0fs", type(exc).__name__, self.interval_s)
            await asyncio.sleep(self.interval_s)
