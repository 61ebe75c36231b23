"""Job store against real databases: SQLite file and PostgreSQL (same code, Alembic migrations)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from async_svc.jobs import Conflict, NotFound, cancel_job, create_job, get_job
from common import kafka
from common.store import Job, OutboxMessage
from worker.jobstate import JobStore

pytestmark = pytest.mark.integration


async def _create(db, key=None, text="A long document. " * 10, tenant="t1", email=None):
    return await create_job(
        db,
        tenant=tenant,
        text=text,
        max_summary_tokens=None,
        language="auto",
        notify={"email": email} if email else None,
        metadata={"k": "v"},
        idempotency_key=key,
    )


async def test_job_and_outbox_row_are_written_together(db):
    job, created = await _create(db)
    assert created
    async with db.session() as s:
        rows = (await s.execute(select(OutboxMessage))).scalars().all()
    # Keyed by tenant (fair partitioning, common/store/transitions.py jobs_key); the value names the job.
    assert [(r.topic, r.key, r.value["job_id"]) for r in rows] == [(kafka.JOBS, "t1", job.id)]
    assert "document" not in rows[0].value  # claim-check: the text stays in the store


async def test_idempotency_key_same_body_same_job_different_body_409(db):
    a, created_a = await _create(db, key="k-1")
    b, created_b = await _create(db, key="k-1")
    assert created_a and not created_b and a.id == b.id
    with pytest.raises(Conflict) as e:
        await _create(db, key="k-1", text="another body")
    assert e.value.status == 409
    other_tenant, created = await _create(db, key="k-1", tenant="t2")  # keys are per tenant
    assert created and other_tenant.id != a.id


async def test_concurrent_same_idempotency_key_creates_one_job(db):
    results = await asyncio.gather(*[_create(db, key="race") for _ in range(5)], return_exceptions=True)
    ids = {r[0].id for r in results if not isinstance(r, BaseException)}
    assert len(ids) == 1
    async with db.session() as s:
        assert len((await s.execute(select(Job))).scalars().all()) == 1


async def test_other_tenant_gets_404_like_unknown(db):
    job, _ = await _create(db)
    with pytest.raises(NotFound):
        await get_job(db, "intruder", job.id)
    with pytest.raises(NotFound):
        await get_job(db, "t1", "00000000-0000-0000-0000-000000000000")
    view = await get_job(db, "t1", job.id)
    assert view.status == "queued" and view.metadata == {"k": "v"}


async def test_cancel_queued_job_emits_one_event(db):
    job, _ = await _create(db)
    view = await cancel_job(db, "t1", job.id)
    assert view.status == "cancelled"
    with pytest.raises(Exception, match="already cancelled"):
        await cancel_job(db, "t1", job.id)
    async with db.session() as s:
        events = (await s.execute(select(OutboxMessage).where(OutboxMessage.topic == kafka.EVENTS))).scalars().all()
    assert [e.value["type"] for e in events] == ["job.cancelled"]


async def test_cancel_racing_a_claim_is_never_lost(db):
    """A worker may claim the job between cancel's read and its write (e2e found one such 200
    with status "running"): whatever the interleaving, a cancel that answers must leave the job
    cancelled or cancelling, and never running."""
    jobs = [(await _create(db, key=f"race-{i}"))[0] for i in range(12)]
    worker = JobStore(db, "w1", 30)
    for job in jobs:
        claimed, view = await asyncio.gather(worker.claim(job.id), cancel_job(db, "t1", job.id))
        assert view.status in ("cancelled", "cancelling"), (claimed, view.status)
        async with db.session() as s:
            status = (await s.get(Job, job.id)).status
        assert status == view.status
        assert status == ("cancelling" if claimed else "cancelled")


async def test_lease_claim_is_exclusive_and_terminal_state_is_reached_once(db):
    job, _ = await _create(db)
    w1, w2 = JobStore(db, "w1", 30), JobStore(db, "w2", 30)
    assert await w1.claim(job.id)
    assert not await w2.claim(job.id)  # live lease held by w1
    assert await w1.succeed(job.id, "done", 3)
    assert not await w1.succeed(job.id, "again", 3)
    assert not await w2.claim(job.id)
    async with db.session() as s:
        j = await s.get(Job, job.id)
        events = (await s.execute(select(OutboxMessage).where(OutboxMessage.topic == kafka.EVENTS))).scalars().all()
    assert j.status == "succeeded" and j.summary == "done"
    assert [e.value["event_id"] for e in events] == [f"{job.id}:succeeded"]


async def test_expired_lease_is_taken_over(db):
    job, _ = await _create(db)
    w1, w2 = JobStore(db, "w1", 30), JobStore(db, "w2", 30)
    assert await w1.claim(job.id)
    await w1.release(job.id)  # what a rebalance/shutdown does; a crash lets the TTL run out
    assert await w2.claim(job.id)
    with pytest.raises(Exception):  # noqa: B017 - LeaseLost
        await w1.renew(job.id)
    assert await w2.renew(job.id) == "running"


async def test_checkpoints_survive_a_restart(db):
    job, _ = await _create(db)
    w = JobStore(db, "w1", 30)
    assert await w.claim(job.id)
    await w.set_total(job.id, 3, 0)
    await w.save_chunk(job.id, 0, 0, "h0", "s0")
    await w.save_chunk(job.id, 0, 1, "h1", "s1")
    assert await w.checkpoints(job.id, 0) == {0: ("h0", "s0"), 1: ("h1", "s1")}
    view = await get_job(db, "t1", job.id)
    assert (view.progress.chunks_done, view.progress.chunks_total) == (2, 3)


async def test_retry_then_fail_writes_dlq_and_one_failed_event(db):
    from datetime import UTC, datetime

    from common.schemas import JobMessage, JobParams

    job, _ = await _create(db)
    w = JobStore(db, "w1", 30)
    msg = JobMessage(job_id=job.id, tenant="t1", params=JobParams(), enqueued_at=datetime.now(UTC))
    assert await w.claim(job.id)
    assert await w.schedule_retry(job.id, msg, "triton unavailable", 1.0)
    assert await w.claim(job.id)
    assert await w.fail(job.id, "model_error", "gave up", msg)
    assert not await w.fail(job.id, "model_error", "gave up twice", msg)
    async with db.session() as s:
        rows = (await s.execute(select(OutboxMessage).order_by(OutboxMessage.id))).scalars().all()
        j = await s.get(Job, job.id)
    assert [r.topic for r in rows] == [kafka.JOBS, kafka.JOBS_RETRY, kafka.EVENTS, kafka.JOBS_DLQ]
    assert rows[1].value["attempt"] == 2 and rows[1].value["not_before"]
    assert j.status == "failed" and j.attempts == 2 and j.error_detail == "gave up"
