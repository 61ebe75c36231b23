"""Job listing (keyset pages, tenant isolation, filters, cursors) and retention (expires_at, the
sweeper's tombstones, 410) against real databases: SQLite file and PostgreSQL (the ``db`` fixture)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import ClauseElement, Executable, func, inspect, select, text, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import undefer

from async_svc.jobs import Gone, NotFound, cancel_job, create_job, get_job
from async_svc.listing import decode_cursor, encode_cursor, list_jobs, page_query
from common.problems import Problem
from common.schemas import JobStatus
from common.store import ChunkResult, Job
from common.store.retention import RetentionSweeper
from worker.jobstate import JobStore

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)


async def _create(db, tenant: str = "t1", text: str = "A document to keep for a while.", metadata=None) -> str:
    job, _ = await create_job(
        db,
        tenant=tenant,
        text=text,
        max_summary_tokens=None,
        language="auto",
        notify={"email": "someone@example.com"},
        metadata=metadata or {"ref": "x"},
        idempotency_key=None,
    )
    return job.id


async def _all_pages(db, tenant: str, limit: int, between=None, **filters) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(1000):
        page = await list_jobs(db, tenant, limit=limit, cursor=cursor, **filters)
        assert len(page.items) <= limit
        seen += [v.id for v in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return seen
        if between is not None:
            await between()
    raise AssertionError("no last page")


async def _newest_first(db, ids: list[str]) -> list[str]:
    async with db.session() as s:
        rows = await s.execute(select(Job.id).where(Job.id.in_(ids)).order_by(Job.created_at.desc(), Job.id.desc()))
        return list(rows.scalars())


async def test_pages_are_stable_while_jobs_are_added(db):
    """Jobs created between page fetches are newer than all listed ones: no older job is skipped
    or listed twice, and another tenant's jobs never appear."""
    old = [await _create(db) for _ in range(23)]
    theirs = [await _create(db, tenant="t2") for _ in range(4)]
    added: list[str] = []  # t1's, created while paging
    added_theirs: list[str] = []

    async def add_two() -> None:
        added.append(await _create(db))
        added_theirs.append(await _create(db, tenant="t2"))

    seen = await _all_pages(db, "t1", limit=5, between=add_two)
    assert len(added) == 4  # the test did insert between each of the 5 pages
    assert len(seen) == len(set(seen))  # no duplicates
    assert seen == await _newest_first(db, old)  # every older job, newest first, none skipped
    assert not set(seen) & set(theirs + added_theirs + added)

    # a fresh listing sees the new jobs first, then the older ones; t2 sees only its own
    assert await _all_pages(db, "t1", limit=100) == await _newest_first(db, old + added)
    assert await _all_pages(db, "t2", limit=3) == await _newest_first(db, theirs + added_theirs)


async def test_ties_on_created_at_are_broken_by_id(db):
    ids = [await _create(db) for _ in range(6)]
    same = datetime(2026, 1, 1, tzinfo=UTC)
    async with db.transaction() as s:
        await s.execute(update(Job).where(Job.id.in_(ids)).values(created_at=same))
    seen = await _all_pages(db, "t1", limit=2)
    assert seen == await _newest_first(db, ids) and len(set(seen)) == 6


async def test_status_and_created_after_filters(db):
    a = await _create(db)
    b = await _create(db)
    c = await _create(db)
    await cancel_job(db, "t1", b)
    async with db.session() as s:
        b_created = (await s.execute(select(Job.created_at).where(Job.id == b))).scalar_one()
    assert await _all_pages(db, "t1", 1, status=JobStatus.cancelled) == [b]
    assert await _all_pages(db, "t1", 1, status=JobStatus.queued) == [c, a]
    assert await _all_pages(db, "t1", 10, created_after=b_created) == [c]
    assert await _all_pages(db, "t1", 10, status=JobStatus.succeeded) == []


async def test_listing_items_are_job_views_without_the_document(db):
    jid = await _create(db, text="SECRET DOCUMENT TEXT " * 5, metadata={"ref": 7})
    page = await list_jobs(db, "t1")
    assert page.next_cursor is None
    [item] = page.items
    assert item.id == jid and item.status == JobStatus.queued and item.metadata == {"ref": 7}
    assert "SECRET" not in page.model_dump_json()
    assert item.model_dump(exclude={"notifications"}) == (await get_job(db, "t1", jid)).model_dump(
        exclude={"notifications"}
    )


@pytest.mark.parametrize(
    "cursor",
    [
        "not-base64!",
        "eyJ2IjoxfQ",  # {"v":1}
        encode_cursor(datetime.now(UTC), "00000000-0000-0000-0000-000000000000")[:-3] + "AAA",
        encode_cursor(datetime.now(UTC), "00000000-0000-0000-0000-000000000000").replace("eyJ2IjoxL", "eyJ2IjoyL"),
        "x" * 600,
    ],
)
async def test_a_tampered_cursor_is_refused(db, cursor):
    with pytest.raises(Problem) as ei:
        await list_jobs(db, "t1", cursor=cursor)
    assert (ei.value.status, ei.value.type) == (422, "invalid-cursor")
    assert "cursor" in ei.value.detail


def test_cursor_round_trip():
    t = datetime(2026, 12, 2, 7, 0, 0, 123456, tzinfo=UTC)
    jid = "5c0a8f1e-8d2b-4a7e-9f3c-0d6b1e2a3c4d"
    assert decode_cursor(encode_cursor(t, jid)) == (t, jid)


class Explain(Executable, ClauseElement):
    """``EXPLAIN`` (PostgreSQL) / ``EXPLAIN QUERY PLAN`` (SQLite) of a statement, binds and all."""

    inherit_cache = False

    def __init__(self, stmt) -> None:
        self.stmt = stmt


@compiles(Explain)
def _explain(element, compiler, **kw):
    prefix = "EXPLAIN QUERY PLAN " if compiler.dialect.name == "sqlite" else "EXPLAIN "
    return prefix + compiler.process(element.stmt, **kw)


@pytest.mark.parametrize(
    ("status", "index"), [(None, "ix_jobs_tenant_created"), (JobStatus.queued, "ix_jobs_tenant_status_created")]
)
async def test_the_listing_query_reads_its_index_without_a_sort(db, status, index):
    for _ in range(3):
        await _create(db)
    cursor = encode_cursor(datetime.now(UTC), "00000000-0000-0000-0000-000000000000")
    q = page_query("t1", status=status, created_after=None, limit=20, cursor=cursor)
    async with db.engine.connect() as conn:
        names = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("jobs")})
        assert {"ix_jobs_tenant_created", "ix_jobs_tenant_status_created", "ix_jobs_expiry_due"} <= names
        if not db.is_sqlite:
            # A 3-row table is cheaper to scan, and sorting 3 rows costs nothing: the planner once
            # took the status index plus a sort. Ask whether an index serves the page in order: with
            # both off, a plan needing a sort still shows one (and fails below).
            await conn.execute(text("SET enable_seqscan = off"))
            await conn.execute(text("SET enable_sort = off"))
        plan = "\n".join(str(row[-1]) for row in await conn.execute(Explain(q)))
    assert index in plan, plan
    assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan


# ---- retention -------------------------------------------------------------------------------


async def _finish(db, retention: timedelta = 30 * DAY, chunks: int = 3) -> str:
    """A job that ran to success through the worker's store, with chunk checkpoints."""
    jid = await _create(db)
    w = JobStore(db, "w1", 30, retention=retention)
    assert await w.claim(jid)
    async with db.transaction() as s:
        s.add_all(
            [ChunkResult(job_id=jid, level=0, idx=i, input_sha256="0" * 64, summary=f"c{i}") for i in range(chunks)]
        )
    assert await w.transitions.succeed(jid, w.lease, "The summary.", chunks)
    return jid


async def _row(db, jid: str) -> Job:
    async with db.session() as s:
        # Job.document is deferred (common/store/models.py): the tombstone checks read it
        job = await s.get(Job, jid, options=[undefer(Job.document)])
        assert job is not None
        return job


async def _checkpoints(db, jid: str) -> int:
    async with db.session() as s:
        return (await s.execute(select(func.count()).where(ChunkResult.job_id == jid))).scalar_one()


async def test_terminal_transitions_stamp_expires_at(db):
    done = await _row(db, await _finish(db, retention=2 * DAY))
    assert done.expires_at == done.finished_at + 2 * DAY
    view = await get_job(db, "t1", done.id)
    assert view.expires_at == done.expires_at and view.expired_at is None and view.summary == "The summary."

    cancelled = await _create(db)
    await cancel_job(db, "t1", cancelled, retention=DAY / 2)
    row = await _row(db, cancelled)
    assert row.expires_at == row.finished_at + DAY / 2

    queued = await _row(db, await _create(db))
    assert queued.expires_at is None and (await get_job(db, "t1", queued.id)).expires_at is None


async def test_the_sweeper_keeps_a_tombstone_and_get_answers_410(db):
    jid = await _finish(db)
    keep = await _finish(db, retention=60 * DAY)  # not due yet
    queued = await _create(db)  # never finished: never expires
    row = await _row(db, jid)
    sweeper = RetentionSweeper(db, 30 * DAY)

    assert await sweeper.sweep(now=row.expires_at - timedelta(seconds=1)) == 0
    assert (await get_job(db, "t1", jid)).summary == "The summary."

    later = row.expires_at + timedelta(seconds=1)
    assert await sweeper.sweep(now=later) == 1
    gone = await _row(db, jid)
    assert gone.document == "" and gone.summary is None and gone.metadata_ is None and gone.notify is None
    assert gone.expired_at == later
    assert (gone.id, gone.tenant, gone.status, gone.created_at, gone.finished_at) == (
        row.id,
        "t1",
        JobStatus.succeeded,
        row.created_at,
        row.finished_at,
    )
    assert await _checkpoints(db, jid) == 0 and await _checkpoints(db, keep) == 3

    with pytest.raises(Gone) as ei:
        await get_job(db, "t1", jid)
    assert ei.value.status == 410 and ei.value.type == "job-expired" and jid in ei.value.detail
    with pytest.raises(NotFound):  # another tenant still learns nothing
        await get_job(db, "t2", jid)

    # the listing shows it as expired, without summary or metadata
    items = {v.id: v for v in (await list_jobs(db, "t1")).items}
    assert set(items) == {jid, keep, queued}
    assert items[jid].expired_at == later and items[jid].summary is None and items[jid].metadata is None
    assert items[keep].expired_at is None and items[keep].summary == "The summary."

    # idempotent: a second sweep finds nothing; the queued job is left alone however late it is
    assert await sweeper.sweep(now=later + 365 * DAY) == 1  # `keep` is due by then
    assert await sweeper.sweep(now=later + 365 * DAY) == 0
    assert (await _row(db, queued)).expired_at is None


async def test_past_expires_at_get_is_410_before_the_sweeper_ran(db):
    jid = await _finish(db)
    async with db.transaction() as s:
        await s.execute(update(Job).where(Job.id == jid).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    with pytest.raises(Gone):
        await get_job(db, "t1", jid)
    [item] = (await list_jobs(db, "t1")).items
    assert item.summary is None and item.expired_at is not None
    assert (await _row(db, jid)).summary == "The summary."  # only the sweeper deletes


async def test_two_sweepers_at_once_expire_each_job_exactly_once(db):
    ids = [await _finish(db, chunks=1) for _ in range(30)]
    later = datetime.now(UTC) + 31 * DAY
    a, b = RetentionSweeper(db, 30 * DAY, batch=4), RetentionSweeper(db, 30 * DAY, batch=4)

    async def drain(sw: RetentionSweeper) -> list[str]:
        out: list[str] = []
        while batch := await sw.expire_batch(now=later):
            out += batch
        return out

    got_a, got_b = await asyncio.gather(drain(a), drain(b))
    assert not set(got_a) & set(got_b)  # no job expired twice
    assert sorted(got_a + got_b) == sorted(ids)  # and none left behind
    assert await a.sweep(now=later) == 0 and await b.sweep(now=later) == 0
    async with db.session() as s:
        assert (await s.execute(select(func.count()).select_from(ChunkResult))).scalar_one() == 0
        assert (await s.execute(select(func.count()).where(Job.expired_at.is_(None)))).scalar_one() == 0


async def test_the_sweeper_stamps_jobs_finished_without_expires_at(db):
    """Rows finished before migration 0003 (or by a process that does not stamp) get finish time
    + retention; a stamp already there is never moved."""
    legacy = await _finish(db)
    stamped = await _finish(db, retention=DAY)
    async with db.transaction() as s:
        await s.execute(update(Job).where(Job.id == legacy).values(expires_at=None))
    sweeper = RetentionSweeper(db, 10 * DAY)
    assert await sweeper.stamp_unstamped() == 1
    assert await sweeper.stamp_unstamped() == 0
    leg, st = await _row(db, legacy), await _row(db, stamped)
    assert leg.expires_at == leg.finished_at + 10 * DAY
    assert st.expires_at == st.finished_at + DAY
