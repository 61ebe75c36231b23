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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from async_svc.metrics import INTAKE_BATCH
from common.store import Database, Job
from common.store.transitions import add_queued

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    job: Job
    message: dict[str, Any]
    done: asyncio.Future


class GroupCommitter:
    def __init__(self, db: Database, *, max_batch: int = 256, fault: Callable[[str], None] | None = None) -> None:
        self.db = db
        self.max_batch = max_batch
        self.fault = fault
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
        await write_jobs(self.db, [(it.job, it.message) for it in batch], self.fault)
        for it in batch:
            if not it.done.done():
                it.done.set_result(None)


async def write_jobs(
    db: Database, jobs: list[tuple[Job, dict[str, Any]]], fault: Callable[[str], None] | None = None
) -> None:
    """Jobs and their ``precis.jobs`` outbox rows in one transaction (the committer's batch, or
    one job when async_svc.jobs.create_job runs without a committer). ``fault`` is the
    tests/faults hook: SIGKILL right before or right after the commit."""
    async with db.transaction() as s:
        await add_queued(s, jobs)
        if fault:
            await s.flush()
            fault("crash_before_commit")
    if fault:
        fault("crash_after_commit")


def _fail(item: _Pending, exc: BaseException) -> None:
    if not item.done.done():
        item.done.set_exception(exc)
