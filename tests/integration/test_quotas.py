"""Per-tenant quotas at intake (async_svc/intake.py) on real SQLite and PostgreSQL: the job over a
quota gets a 429 naming the quota, its limit and the current count; other tenants are not
affected; concurrent submits, through one committer or through two "replicas" (two Database
engines, two committers), never take more slots than the limit. And the document column is
loaded only where it is needed (not by GET, cancel, the notifier's read, or a worker's claim)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, func, inspect, select

from async_svc.intake import GroupCommitter, QuotaExceeded, TenantQuota
from async_svc.jobs import cancel_job, create_job, get_job
from common.schemas import JobStatus
from common.store import Database, Job
from common.store.transitions import JobTransitions, Lease

pytestmark = pytest.mark.integration

BIG = 10**9


async def _submit(db, tenant="t1", text="A short document. " * 4, *, committer=None, quota=None, key=None):
    job, _ = await create_job(
        db,
        tenant=tenant,
        text=text,
        max_summary_tokens=None,
        language="auto",
        notify=None,
        metadata=None,
        idempotency_key=key,
        committer=committer,
        quota=quota,
    )
    return job


async def _count(db: Database, tenant: str, *states: JobStatus) -> int:
    async with db.session() as s:
        q = select(func.count()).select_from(Job).where(Job.tenant == tenant)
        if states:
            q = q.where(Job.status.in_(states))
        return (await s.execute(q)).scalar_one()


async def test_active_jobs_over_the_quota_are_429_naming_quota_limit_and_count(db):
    quota = TenantQuota(max_active_jobs=3, max_documents=BIG, max_bytes=BIG, retry_after_s=7)
    jobs = [await _submit(db, quota=quota) for _ in range(3)]
    with pytest.raises(QuotaExceeded) as exc:
        await _submit(db, quota=quota)
    p = exc.value
    assert p.status == 429 and p.type == "quota-exceeded"
    assert p.extra == {"quota": "active_jobs", "limit": 3, "current": 3}
    assert "active_jobs" in p.detail and "3" in p.detail
    assert p.headers == {"Retry-After": "7"}
    assert await _count(db, "t1") == 3  # the refused job left no row (and no outbox message)
    # Another tenant has its own quota.
    await _submit(db, tenant="t2", quota=quota)
    # A finished job frees its slot; running and cancelling ones hold theirs.
    sm = JobTransitions(db)
    lease = Lease.of("w", 30)
    assert await sm.claim(jobs[0].id, lease) is not None
    assert await sm.claim(jobs[1].id, lease) is not None
    await sm.request_cancel(jobs[1].id, "t1")  # running → cancelling: still active
    with pytest.raises(QuotaExceeded):
        await _submit(db, quota=quota)
    assert await sm.succeed(jobs[0].id, lease, "summary", 1)
    await _submit(db, quota=quota)
    assert await _count(db, "t1", JobStatus.queued, JobStatus.running, JobStatus.cancelling) == 3


async def test_an_idempotent_replay_takes_no_slot(db):
    quota = TenantQuota(max_active_jobs=1, max_documents=BIG, max_bytes=BIG)
    first = await _submit(db, quota=quota, key="k")
    again = await _submit(db, quota=quota, key="k")
    assert again.id == first.id


async def test_stored_documents_and_bytes_quotas(db):
    docs = TenantQuota(max_active_jobs=BIG, max_documents=2, max_bytes=BIG)
    sm = JobTransitions(db)
    for _ in range(2):
        job = await _submit(db, quota=docs)
        await sm.fail(job.id, "model_error", "x", None)  # finished jobs still store their documents
    with pytest.raises(QuotaExceeded) as exc:
        await _submit(db, quota=docs)
    assert exc.value.extra == {"quota": "stored_documents", "limit": 2, "current": 2}

    text = "x" * 1000
    size = TenantQuota(max_active_jobs=BIG, max_documents=BIG, max_bytes=2500)
    await _submit(db, tenant="t3", text=text, quota=size)
    await _submit(db, tenant="t3", text=text, quota=size)
    with pytest.raises(QuotaExceeded) as exc:
        await _submit(db, tenant="t3", text=text, quota=size)
    assert exc.value.extra == {"quota": "stored_bytes", "limit": 2500, "current": 2000}
    await _submit(db, tenant="t3", text="y" * 500, quota=size)  # exactly up to the limit fits


async def test_a_burst_through_the_group_committer_takes_exactly_the_free_slots(db):
    quota = TenantQuota(max_active_jobs=5, max_documents=BIG, max_bytes=BIG)
    committer = GroupCommitter(db, quota=quota)
    committer.start()
    try:
        results = await asyncio.gather(
            *(_submit(db, committer=committer, text=f"doc {i}. " * 4) for i in range(20)),
            *(_submit(db, tenant="other", committer=committer) for _ in range(3)),
            return_exceptions=True,
        )
    finally:
        await committer.stop()
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(refused) == 15, results
    assert all(not isinstance(r, BaseException) or isinstance(r, QuotaExceeded) for r in results)
    assert await _count(db, "t1") == 5
    assert await _count(db, "other") == 3  # batch-mates of refused jobs are committed


async def test_two_replicas_submitting_at_once_never_pass_the_limit(db):
    """Two engines (two async_svc replicas, each with its own committer) racing for one tenant's
    last slots: the tenant lock (PostgreSQL advisory lock, SQLite write lock) serialises the
    count-and-insert, so exactly the limit is admitted."""
    quota = TenantQuota(max_active_jobs=6, max_documents=BIG, max_bytes=BIG)
    other = Database(db.url)
    committers = [GroupCommitter(db, max_batch=2, quota=quota), GroupCommitter(other, max_batch=2, quota=quota)]
    for c in committers:
        c.start()
    try:
        results = await asyncio.gather(
            *(
                _submit(d, committer=c, text=f"doc {i}. " * 4)
                for i in range(12)
                for d, c in zip((db, other), committers, strict=True)
            ),
            return_exceptions=True,
        )
    finally:
        for c in committers:
            await c.stop()
        await other.close()
    assert all(isinstance(r, Job | QuotaExceeded) for r in results), results
    assert sum(isinstance(r, Job) for r in results) == 6
    assert await _count(db, "t1") == 6


# ---- the document column is loaded only where it is needed -------------------------------------


class _Statements:
    """The SQL sent on an engine while active (a cursor-level event: what really went out)."""

    def __init__(self, db: Database) -> None:
        self.engine = db.engine.sync_engine
        self.sql: list[str] = []

    def _hook(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.sql.append(statement)

    def __enter__(self) -> _Statements:
        event.listen(self.engine, "before_cursor_execute", self._hook)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self._hook)

    def reading_document(self) -> list[str]:
        return [
            q
            for q in self.sql
            if "jobs.document," in q.replace("\n", " ") or "jobs.document " in q or q.rstrip().endswith("jobs.document")
        ]


async def test_get_cancel_claim_and_the_notifier_read_do_not_load_the_document(db):
    job = await _submit(db, text="A document that must stay in the store. " * 200)
    sm = JobTransitions(db)
    with _Statements(db) as seen:
        view = await get_job(db, "t1", job.id)
        assert view.status == JobStatus.queued
        claimed = await sm.claim(job.id, Lease.of("w", 30), 3)
        assert claimed is not None and "document" in inspect(claimed).unloaded
        await cancel_job(db, "t1", job.id)  # running → cancelling, with its refreshes
        loaded = await sm.load(job.id)
        assert loaded is not None and "document" in inspect(loaded).unloaded
        async with db.session() as s:  # what notifier/service.py does for an event
            row = (await s.execute(select(Job).where(Job.id == job.id))).scalar_one()
            assert "document" in inspect(row).unloaded
    assert seen.sql, "no statement was captured"
    assert not seen.reading_document(), seen.reading_document()
    # Where it is needed (the worker, when it runs the job), it is one column of one row.
    with _Statements(db) as seen:
        assert (await sm.document(job.id)) == "A document that must stay in the store. " * 200
    assert len(seen.reading_document()) == 1
