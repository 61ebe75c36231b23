"""The workers' recent pace and the work queued ahead, from the store (``GET /internal/throughput``,
read by the gateway's dry-run estimate). Pure data logic; no HTTP here.

Pace: the jobs that succeeded in the last ``window_s`` (newest first, at most ``limit`` of them:
``ix_jobs_status_finished``, migration 0004) made ``sum(chunks_total)`` model calls while at least
one of them was running (the union of their ``[started_at, finished_at]``): calls per second of
the whole worker fleet while it works, idle time left out. ``started_at`` is the first claim, so a
retried job's backoff counts as busy time (the pace is then understated, never overstated). No
such job: the pace is unknown (``model_calls_per_s`` null), never a made-up number.

Queue: the queued and running jobs of every tenant (``ix_jobs_status``); a job with a plan
(``chunks_total`` set by the worker) has ``chunks_total - chunks_done`` calls left; one without
(not started yet) is estimated from its document bytes at the recent jobs' calls per byte, or
left unknown when there are none.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from sqlalchemy import Select, case, func, select

from common.schemas import JobStatus, QueueAhead, WorkerThroughput
from common.store import Database, Job

WINDOW_S = 3600
MAX_SAMPLE_JOBS = 1000


def busy_seconds(intervals: list[tuple[datetime, datetime]]) -> float:
    """Length of the union of the intervals."""
    total = 0.0
    end: datetime | None = None
    start: datetime | None = None
    for a, b in sorted(intervals):
        if end is None or a > end:
            if end is not None and start is not None:
                total += (end - start).total_seconds()
            start, end = a, b
        elif b > end:
            end = b
    if end is not None and start is not None:
        total += (end - start).total_seconds()
    return total


def recent_query(since: datetime, limit: int = MAX_SAMPLE_JOBS) -> Select[datetime | None, datetime | None, int, int]:
    """The latest jobs that succeeded since ``since`` (a range of ``ix_jobs_status_finished``)."""
    return (
        select(Job.started_at, Job.finished_at, Job.chunks_total, Job.document_bytes)
        .where(Job.status == JobStatus.succeeded, Job.finished_at >= since)
        .order_by(Job.finished_at.desc())
        .limit(limit)
    )


async def recent_throughput(
    db: Database, *, now: datetime | None = None, window_s: int = WINDOW_S, limit: int = MAX_SAMPLE_JOBS
) -> tuple[WorkerThroughput, float | None]:
    """The pace over the window, and the model calls per document byte of those jobs."""
    since = (now or datetime.now(UTC)) - timedelta(seconds=window_s)
    async with db.session() as s:
        rows = (await s.execute(recent_query(since, limit))).all()
    intervals = [(a, b) for a, b, _, _ in rows if a is not None and b is not None and b >= a]
    calls = sum(n for _, _, n, _ in rows)
    size = sum(n for _, _, _, n in rows)
    busy = busy_seconds(intervals)
    pace = WorkerThroughput(
        window_s=window_s,
        jobs=len(rows),
        model_calls=calls,
        busy_s=round(busy, 3),
        model_calls_per_s=calls / busy if busy > 0 and calls > 0 else None,
    )
    return pace, (calls / size if size > 0 and calls > 0 else None)


async def queue_ahead(db: Database, calls_per_byte: float | None) -> QueueAhead:
    planned = Job.chunks_total > 0
    q = select(
        func.count(case((Job.status == JobStatus.running, 1))),
        func.count(case((Job.status == JobStatus.queued, 1))),
        func.coalesce(func.sum(case((planned, Job.chunks_total - Job.chunks_done), else_=0)), 0),
        func.count(case((Job.chunks_total <= 0, 1))),
        func.coalesce(func.sum(case((planned, 0), else_=Job.document_bytes)), 0),
    ).where(Job.status.in_((JobStatus.queued, JobStatus.running)))
    async with db.session() as s:
        running, queued, left, unplanned, unplanned_bytes = (await s.execute(q)).one()
    left = max(0, int(left))
    calls: int | None = left
    if unplanned:
        # their size at the recent calls per byte, rounded up, and at least one call each
        if calls_per_byte is None:
            calls = None
        else:
            calls = left + max(int(unplanned), math.ceil(int(unplanned_bytes) * calls_per_byte))
    return QueueAhead(running_jobs=int(running), queued_jobs=int(queued), model_calls=calls)
