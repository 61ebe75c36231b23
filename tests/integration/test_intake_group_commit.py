"""async_svc's group commit (async_svc/intake.py) against real databases: concurrent requests
share transactions, and one conflicting Idempotency-Key does not fail its batch-mates."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from async_svc.intake import GroupCommitter
from async_svc.jobs import Conflict, create_job
from async_svc.metrics import INTAKE_BATCH
from common.store import Job, OutboxMessage

pytestmark = pytest.mark.integration


def _batches() -> tuple[float, float]:
    """(transactions, jobs) observed by the intake histogram so far."""
    count = total = 0.0
    for metric in INTAKE_BATCH.collect():
        for s in metric.samples:
            if s.name.endswith("_count"):
                count = s.value
            elif s.name.endswith("_sum"):
                total = s.value
    return count, total


async def _create(db, committer, i, key=None, text=None):
    return await create_job(
        db,
        tenant="t1",
        text=text or f"Document number {i}. " * 5,
        max_summary_tokens=None,
        language="auto",
        notify=None,
        metadata=None,
        idempotency_key=key,
        committer=committer,
    )


async def test_a_burst_is_committed_in_shared_transactions(db):
    committer = GroupCommitter(db)
    committer.start()
    tx0, jobs0 = _batches()
    try:
        results = await asyncio.gather(*(_create(db, committer, i) for i in range(60)))
    finally:
        await committer.stop()
    tx, jobs = _batches()
    assert jobs - jobs0 == 60
    assert tx - tx0 < 60, "every job got a transaction of its own: nothing was grouped"
    ids = {job.id for job, created in results if created}
    assert len(ids) == 60
    async with db.session() as s:
        assert await s.scalar(select(func.count()).select_from(Job)) == 60
        rows = (await s.execute(select(OutboxMessage.key, OutboxMessage.value))).all()
    assert sorted(v["job_id"] for _, v in rows) == sorted(ids)  # one outbox row per job, none without its job
    assert {k for k, _ in rows} == {"t1"}  # keyed by tenant: one tenant's jobs share a partition


async def test_an_idempotency_conflict_fails_only_its_own_request(db):
    committer = GroupCommitter(db)
    committer.start()
    try:
        results = await asyncio.gather(
            *(_create(db, committer, i) for i in range(10)),
            _create(db, committer, 100, key="same", text="first body"),
            _create(db, committer, 101, key="same", text="first body"),
            _create(db, committer, 102, key="same", text="second body"),
            return_exceptions=True,
        )
    finally:
        await committer.stop()
    plain, same = results[:10], results[10:]
    assert all(not isinstance(r, BaseException) and r[1] for r in plain)
    conflicts = [r for r in same if isinstance(r, Conflict)]
    jobs = [r[0].id for r in same if not isinstance(r, BaseException)]
    # exactly one job for the key; the request with the other body may win or lose the race, but
    # the two requests with the same body always name the same job
    assert len(set(jobs)) == 1
    assert len(conflicts) + len(jobs) == 3 and len(conflicts) <= 2
    async with db.session() as s:
        assert await s.scalar(select(func.count()).select_from(Job)) == 11


async def test_stop_commits_what_was_handed_in_and_then_refuses(db):
    committer = GroupCommitter(db)
    committer.start()
    pending = [asyncio.create_task(_create(db, committer, i)) for i in range(20)]
    for _ in range(5):  # let every request hand its job in (no await before that in create_job)
        await asyncio.sleep(0)
    await committer.stop()
    results = await asyncio.gather(*pending)
    assert all(created for _, created in results)
    async with db.session() as s:
        assert await s.scalar(select(func.count()).select_from(Job)) == 20
    with pytest.raises(RuntimeError):
        await _create(db, committer, 99)
