"""A task cancelled in the middle of a store transaction must leave the database usable.

Cancellation is routine here: the worker stops a lease renewer when its job ends, the consumer
cancels a partition's siblings when one fails, and a drain on SIGTERM cancels what runs. On SQLite
one such cancel used to leave a connection holding the write lock for the life of the process.
Every writer of every process then failed with "database is locked" (seen in CI as a job stuck in
``cancelling`` and a stack answering 500). common/store/db.py explains the fix; this test cancels
real transactions at random points and checks after each that another connection can write.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy import select, text, update

from async_svc.jobs import create_job
from common.store import Database, Job

pytestmark = pytest.mark.integration

CANCELS = 300  # without the fix, SQLite locked up within ~100 (6 runs: after 1, 6, 27, 58, 97, 101)


async def _writable(other: Database, job_id: str) -> None:
    """Another engine updates the row, waiting at most 2 s for any lock; raises if it cannot."""
    async with other.transaction() as s:
        if other.is_sqlite:
            await s.execute(text("PRAGMA busy_timeout = 2000"))
        else:
            await s.execute(text("SET LOCAL lock_timeout = '2s'"))
        await s.execute(update(Job).where(Job.id == job_id).values(chunks_total=Job.chunks_total))


async def test_cancelled_transactions_leave_no_lock_behind(db: Database) -> None:
    job, _ = await create_job(
        db,
        tenant="t1",
        text="A long document. " * 10,
        max_summary_tokens=None,
        language="auto",
        notify=None,
        metadata={},
        idempotency_key=None,
    )
    other = Database(db.url)
    rng = random.Random(20261202)
    cancelled = 0

    async def bump() -> None:
        async with db.transaction() as s:
            await s.execute(update(Job).where(Job.id == job.id).values(chunks_done=Job.chunks_done + 1))
            await s.execute(select(Job.chunks_done).where(Job.id == job.id))

    try:
        for i in range(CANCELS):
            task = asyncio.create_task(bump())
            await asyncio.sleep(rng.random() * 0.004)  # lands before, inside and after the statements
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                cancelled += 1
            try:
                await _writable(other, job.id)
            except Exception as exc:  # re-raised naming the cancel that broke it
                raise AssertionError(f"after cancel {i + 1}: the store refused a write: {exc}") from exc
        # The engine that saw the cancels still commits (its pool was not left broken).
        await bump()
        async with db.session() as s:
            done = (await s.execute(select(Job.chunks_done).where(Job.id == job.id))).scalar_one()
    finally:
        await other.close()
    assert cancelled > CANCELS // 4, f"only {cancelled} of {CANCELS} landed mid-transaction; the test lost its point"
    # Every bump that finished committed; a cancelled one committed whole or not at all.
    assert 1 + (CANCELS - cancelled) <= done <= CANCELS + 1
