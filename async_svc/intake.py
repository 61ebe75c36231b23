"""Group commit for job intake.

Each accepted job is two rows (the job with its document, and its outbox message) written in one
transaction before the 202 goes out. Under a burst, one transaction per request makes the store's
single writer (SQLite) or the commit round trips (PostgreSQL) the limit, and every request pays a
thread hop and an fsync of its own. The committer below takes every job that is waiting when the
previous commit ends and writes them together: one transaction, one fsync, and no added delay
when requests arrive one at a time (a lone job is committed at once).

Hand-written because it is the store's commit policy, not a reusable library feature:
SQLAlchemy has bulk inserts but no cross-request batching. If a batch hits an IntegrityError (two
requests racing on one Idempotency-Key), it is rolled back and its jobs are committed one by one,
so only the loser sees the error (and async_svc.jobs.create_job answers it with the winner's job).

Per-tenant quotas (:class:`TenantQuota`) are checked in that same transaction, after it holds the
tenant's write lock, so two concurrent submits cannot both take a tenant's last slot:

* PostgreSQL: ``pg_advisory_xact_lock`` on a key of the tenant (taken in sorted tenant order, so
  two batches never wait on each other in a cycle) serialises every intake transaction of one
  tenant, across async_svc replicas, until commit; the count runs after the lock, so it sees every
  job a previous holder committed. Other tenants' intake is not blocked.
* SQLite: a first write statement takes the database's single write lock (WAL: one writer at a
  time, across processes) before the count, so the count reads the latest commit.

A job over a quota is left out of the batch and its request alone gets the 429
(:class:`QuotaExceeded`); the rest of the batch commits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, literal, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from async_svc.metrics import INTAKE_BATCH
from common.problems import Problem
from common.schemas import JobStatus
from common.store import Database, Job
from common.store.transitions import add_queued

log = logging.getLogger(__name__)


ACTIVE_STATES = (JobStatus.queued, JobStatus.running, JobStatus.cancelling)


@dataclass(frozen=True)
class TenantQuota:
    """What one tenant may hold in the store at a time (async_svc settings ``quota_*``)."""

    max_active_jobs: int
    max_documents: int
    max_bytes: int
    retry_after_s: int = 30


_QUOTA_HINTS = {
    "active_jobs": "wait for a job to finish, or cancel one",
    "stored_documents": "wait for retention to remove finished jobs",
    "stored_bytes": "wait for retention to remove finished jobs",
}


class QuotaExceeded(Problem):
    """429 naming the quota, its limit and the tenant's current count."""

    def __init__(self, quota: str, limit: int, current: int, unit: str, retry_after_s: int) -> None:
        super().__init__(
            429,
            "quota-exceeded",
            "Tenant quota exceeded",
            f"quota {quota} is {limit} {unit} per tenant and this tenant holds {current}; " + _QUOTA_HINTS[quota],
            headers={"Retry-After": str(retry_after_s)},
            quota=quota,
            limit=limit,
            current=current,
        )


@dataclass
class _Usage:
    active: int
    documents: int
    bytes: int


async def _lock_and_count(db: Database, s: AsyncSession, tenants: list[str]) -> dict[str, _Usage]:
    if db.is_sqlite:
        # A write statement (it changes nothing) takes SQLite's write lock now, before the count.
        await s.execute(text("UPDATE jobs SET id = id WHERE 0 = 1"))
    else:
        for t in sorted(tenants):
            # hashtext → int4: a collision only makes two tenants share a lock, never a count.
            await s.execute(select(func.pg_advisory_xact_lock(func.hashtext(literal(f"precis-quota:{t}")))))
    usage = {t: _Usage(0, 0, 0) for t in tenants}
    rows = await s.execute(
        select(
            Job.tenant,
            func.sum(case((Job.status.in_(ACTIVE_STATES), 1), else_=0)),
            func.count(),
            func.coalesce(func.sum(Job.document_bytes), 0),
        )
        .where(Job.tenant.in_(tenants))
        .group_by(Job.tenant)
    )
    for tenant, active, docs, size in rows:
        usage[tenant] = _Usage(int(active or 0), int(docs), int(size))
    return usage


def _admit(
    jobs: list[tuple[Job, dict[str, Any]]], usage: dict[str, _Usage], q: TenantQuota
) -> tuple[list[tuple[Job, dict[str, Any]]], dict[str, QuotaExceeded]]:
    """The jobs that fit their tenant's quotas, in arrival order, and the refusal of each other."""
    admitted, refused = [], {}
    wait = q.retry_after_s
    for job, message in jobs:
        u = usage[job.tenant]
        if u.active + 1 > q.max_active_jobs:
            refused[job.id] = QuotaExceeded("active_jobs", q.max_active_jobs, u.active, "jobs", wait)
        elif u.documents + 1 > q.max_documents:
            refused[job.id] = QuotaExceeded("stored_documents", q.max_documents, u.documents, "documents", wait)
        elif u.bytes + job.document_bytes > q.max_bytes:
            refused[job.id] = QuotaExceeded("stored_bytes", q.max_bytes, u.bytes, "bytes", wait)
        else:
            u.active, u.documents, u.bytes = u.active + 1, u.documents + 1, u.bytes + job.document_bytes
            admitted.append((job, message))
    return admitted, refused


@dataclass
class _Pending:
    job: Job
    message: dict[str, Any]
    done: asyncio.Future


class GroupCommitter:
    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 256,
        fault: Callable[[str], None] | None = None,
        quota: TenantQuota | None = None,
    ) -> None:
        self.db = db
        self.max_batch = max_batch
        self.fault = fault
        self.quota = quota
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="intake-group-commit")

    async def stop(self) -> None:
        """Commit every job already handed in (requests still waiting for their 202), then stop."""
        if self._task is None:
            return
        self._closing = True  # no job is accepted after the sentinel
        await self._queue.put(None)  # after everything queued so far
        await self._task
        self._task = None

    async def add(self, job: Job, message: dict[str, Any]) -> None:
        """Returns once the job and its outbox row are committed; raises what the commit raised."""
        if self._task is None or self._task.done() or self._closing:
            raise RuntimeError("intake committer is not running")  # startup/shutdown only
        item = _Pending(job, message, asyncio.get_running_loop().create_future())
        await self._queue.put(item)
        # shield: a client that disconnects must not cancel a commit other jobs share
        await asyncio.shield(item.done)

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            INTAKE_BATCH.observe(len(batch))
            try:
                await self._commit(batch)
            except IntegrityError:
                for item in batch:  # isolate the conflicting job(s)
                    try:
                        await self._commit([item])
                    except Exception as exc:  # noqa: BLE001 - handed to that request
                        _fail(item, exc)
            except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
                log.warning("intake commit of %d jobs failed: %r", len(batch), exc)
                for item in batch:
                    _fail(item, exc)

    async def _commit(self, batch: list[_Pending]) -> None:
        refused = await write_jobs(self.db, [(it.job, it.message) for it in batch], self.fault, self.quota)
        for it in batch:
            if it.job.id in refused:
                _fail(it, refused[it.job.id])
            elif not it.done.done():
                it.done.set_result(None)


async def write_jobs(
    db: Database,
    jobs: list[tuple[Job, dict[str, Any]]],
    fault: Callable[[str], None] | None = None,
    quota: TenantQuota | None = None,
) -> dict[str, QuotaExceeded]:
    """Jobs and their ``precis.jobs`` outbox rows in one transaction (the committer's batch, or
    one job when async_svc.jobs.create_job runs without a committer). With a ``quota``, the jobs
    over their tenant's quota are left out: returns their refusals by job id. ``fault`` is the
    tests/faults hook: SIGKILL right before or right after the commit."""
    refused: dict[str, QuotaExceeded] = {}
    async with db.transaction() as s:
        if quota is not None:
            usage = await _lock_and_count(db, s, list({job.tenant for job, _ in jobs}))
            jobs, refused = _admit(jobs, usage, quota)
        if jobs:
            await add_queued(s, jobs)
        if fault:
            await s.flush()
            fault("crash_before_commit")
    if fault:
        fault("crash_after_commit")
    return refused


def _fail(item: _Pending, exc: BaseException) -> None:
    if not item.done.done():
        item.done.set_exception(exc)
