"""The dry-run estimate's store queries (async_svc/throughput.py) against real databases: SQLite file
and PostgreSQL (the ``db`` fixture): the workers' pace over recently succeeded jobs (the union of
their run times, the window and the LIMIT bound), the queue ahead, and the index that serves it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import inspect, text

from async_svc.throughput import queue_ahead, recent_query, recent_throughput
from common.schemas import JobParams, JobStatus
from common.store import Job

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 9, 12, 0, tzinfo=UTC)


async def insert(db, **values: Any) -> None:
    row: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "tenant": "t1",
        "params": JobParams(),
        "document": "x",
        "document_bytes": 1000,
        "request_hash": "h",
        "chunks_done": 0,
        "chunks_total": 0,
        "attempts": 1,
        "created_at": NOW - timedelta(hours=3),
        "updated_at": NOW,
    }
    row.update(values)
    async with db.transaction() as s:
        s.add(Job(**row))


async def succeeded(db, start_s: int, end_s: int, calls: int, size: int = 1000) -> None:
    """A job that ran from NOW - start_s to NOW - end_s."""
    await insert(
        db,
        status=JobStatus.succeeded,
        chunks_total=calls,
        chunks_done=calls,
        document_bytes=size,
        started_at=NOW - timedelta(seconds=start_s),
        finished_at=NOW - timedelta(seconds=end_s),
    )


async def test_the_pace_is_calls_over_the_union_of_run_times_in_the_window(db):
    await succeeded(db, 3000, 2900, 10, 10_000)  # 100 s
    await succeeded(db, 2950, 2800, 20, 20_000)  # overlaps: together 3000..2800 = 200 s
    await succeeded(db, 1000, 900, 30, 30_000)  # 100 s more
    await succeeded(db, 4000, 3500, 30, 30_000)  # started before the window, finished in it: 500 s
    await succeeded(db, 9000, 8000, 500)  # finished before the window: left out
    await insert(db, status=JobStatus.failed, chunks_total=40, started_at=NOW - timedelta(seconds=500), finished_at=NOW)
    pace, per_byte = await recent_throughput(db, now=NOW, window_s=3600)
    assert (pace.jobs, pace.model_calls, pace.busy_s) == (4, 90, 800.0)
    assert pace.model_calls_per_s == pytest.approx(90 / 800)
    assert per_byte == pytest.approx(90 / 90_000)


async def test_the_sample_is_bounded_to_the_latest_jobs(db):
    for i in range(5):
        await succeeded(db, 100 * i + 50, 100 * i, 10)
    pace, _ = await recent_throughput(db, now=NOW, limit=2)
    assert (pace.jobs, pace.model_calls, pace.busy_s) == (2, 20, 100.0)  # the two latest


async def test_no_recent_job_is_an_unknown_pace(db):
    await succeeded(db, 9000, 8000, 500)
    pace, per_byte = await recent_throughput(db, now=NOW)
    assert (pace.jobs, pace.model_calls, pace.model_calls_per_s, per_byte) == (0, 0, None, None)


async def test_the_queue_ahead_counts_running_and_queued_work(db):
    await insert(db, status=JobStatus.running, chunks_total=20, chunks_done=8, started_at=NOW)
    await insert(db, status=JobStatus.queued, chunks_total=5, chunks_done=2, started_at=NOW)  # a retry: planned
    await insert(db, status=JobStatus.queued, document_bytes=12_000)  # not started: from its size
    await insert(db, status=JobStatus.queued, document_bytes=10)  # tiny: one call at least
    await insert(db, status=JobStatus.cancelling, chunks_total=40, started_at=NOW)  # stopping: not ahead
    await insert(db, status=JobStatus.succeeded, chunks_total=40, chunks_done=40, finished_at=NOW)
    q = await queue_ahead(db, 0.001)
    assert (q.running_jobs, q.queued_jobs, q.model_calls) == (1, 3, 12 + 3 + 12 + 1)
    assert (await queue_ahead(db, None)).model_calls is None  # unplanned jobs and nothing to size them


async def test_an_empty_queue_is_zero_calls_even_without_a_pace(db):
    q = await queue_ahead(db, None)
    assert (q.running_jobs, q.queued_jobs, q.model_calls) == (0, 0, 0)


async def explain(conn, q) -> str:
    """The plan of ``q`` (EXPLAIN / EXPLAIN QUERY PLAN), sent as the driver's SQL: the statement's
    own result types would be applied to the plan's rows otherwise."""
    c = q.compile(dialect=conn.dialect)
    binds = c.construct_params()
    params = tuple(binds[k] for k in c.positiontup) if c.positional else binds
    prefix = "EXPLAIN QUERY PLAN " if conn.dialect.name == "sqlite" else "EXPLAIN "
    rows = await conn.exec_driver_sql(prefix + str(c), params)
    return "\n".join(str(row[-1]) for row in rows)


async def test_the_pace_query_reads_its_index_without_a_sort(db):
    await succeeded(db, 100, 50, 3)
    async with db.engine.connect() as conn:
        names = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("jobs")})
        assert "ix_jobs_status_finished" in names
        if not db.is_sqlite:  # a 1-row table is cheaper to scan: ask which index the planner would use
            await conn.execute(text("SET enable_seqscan = off"))
        plan = await explain(conn, recent_query(NOW - timedelta(hours=1)))
    assert "ix_jobs_status_finished" in plan, plan
    assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan
