"""The worker's writes to the job store. Every transition is a conditional UPDATE, so however many
times a message is delivered, a job reaches exactly one terminal state and emits one event (written
to the outbox in the same transaction)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update

from common import kafka
from common.outbox import enqueue
from common.schemas import JobEvent, JobMessage, JobStatus
from common.store import ChunkResult, Database, Job

RUNNING = JobStatus.running.value
CANCELLING = JobStatus.cancelling.value


def now() -> datetime:
    return datetime.now(UTC)


class LeaseLost(Exception):
    """Another worker owns the job now (or it was finished): stop without writing."""


class Cancelled(Exception):
    """The job was cancelled while running."""


class JobStore:
    def __init__(self, db: Database, owner: str, lease_ttl_s: float) -> None:
        self.db = db
        self.owner = owner
        self.ttl = timedelta(seconds=lease_ttl_s)

    async def load(self, job_id: str) -> Job | None:
        async with self.db.session() as s:
            return await s.get(Job, job_id)

    async def claim(self, job_id: str) -> bool:
        """queued → running (or take over an expired lease). True when this worker now owns it."""
        t = now()
        async with self.db.transaction() as s:
            res = await s.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    or_(
                        Job.status == JobStatus.queued.value,
                        (Job.status == RUNNING) & or_(Job.lease_expires_at < t, Job.lease_owner == self.owner),
                    ),
                )
                .values(
                    status=RUNNING,
                    lease_owner=self.owner,
                    lease_expires_at=t + self.ttl,
                    attempts=Job.attempts + 1,
                    updated_at=t,
                )
            )
            if res.rowcount == 1:
                await s.execute(update(Job).where(Job.id == job_id, Job.started_at.is_(None)).values(started_at=t))
                return True
        return False

    async def renew(self, job_id: str) -> str:
        """Extend the lease; returns the job status. Raises LeaseLost if it is no longer ours."""
        t = now()
        async with self.db.transaction() as s:
            res = await s.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == self.owner, Job.status.in_([RUNNING, CANCELLING]))
                .values(lease_expires_at=t + self.ttl)
            )
            if res.rowcount != 1:
                raise LeaseLost(job_id)
            return (await s.execute(select(Job.status).where(Job.id == job_id))).scalar_one()

    async def release(self, job_id: str) -> None:
        """Give the job back (rebalance, shutdown): the next delivery takes it over at once."""
        async with self.db.transaction() as s:
            await s.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == self.owner, Job.status == RUNNING)
                .values(lease_expires_at=now() - timedelta(seconds=1))
            )

    async def set_total(self, job_id: str, total: int, done: int) -> None:
        async with self.db.transaction() as s:
            await s.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == self.owner)
                .values(chunks_total=total, chunks_done=done, updated_at=now())
            )

    async def checkpoints(self, job_id: str, level: int) -> dict[int, tuple[str, str]]:
        async with self.db.session() as s:
            rows = (
                (await s.execute(select(ChunkResult).where(ChunkResult.job_id == job_id, ChunkResult.level == level)))
                .scalars()
                .all()
            )
            return {r.idx: (r.input_sha256, r.summary) for r in rows}

    async def save_chunk(self, job_id: str, level: int, idx: int, input_sha: str, summary: str) -> str:
        """Checkpoint one chunk summary and bump progress; returns the job status (for cancellation)."""
        t = now()
        async with self.db.transaction() as s:
            existing = await s.get(ChunkResult, (job_id, level, idx))
            if existing is None:
                s.add(ChunkResult(job_id=job_id, level=level, idx=idx, input_sha256=input_sha, summary=summary))
            else:
                existing.input_sha256, existing.summary = input_sha, summary
            res = await s.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == self.owner, Job.status.in_([RUNNING, CANCELLING]))
                .values(chunks_done=Job.chunks_done + 1, lease_expires_at=t + self.ttl, updated_at=t)
            )
            if res.rowcount != 1:
                raise LeaseLost(job_id)
            return (await s.execute(select(Job.status).where(Job.id == job_id))).scalar_one()

    async def _finish(self, job_id: str, status: JobStatus, from_states: list[str], owner_only: bool, **values) -> bool:
        t = now()
        async with self.db.transaction() as s:
            cond = [Job.id == job_id, Job.status.in_(from_states)]
            if owner_only:
                cond.append(Job.lease_owner == self.owner)
            res = await s.execute(
                update(Job)
                .where(*cond)
                .values(
                    status=status.value, finished_at=t, updated_at=t, lease_owner=None, lease_expires_at=None, **values
                )
            )
            if res.rowcount != 1:
                return False
            ev = JobEvent(event_id=f"{job_id}:{status.value}", job_id=job_id, type=f"job.{status.value}", at=t)
            enqueue(s, kafka.EVENTS, job_id, ev.model_dump(mode="json"))
            return True

    async def succeed(self, job_id: str, summary: str, chunks_total: int) -> bool:
        return await self._finish(
            job_id,
            JobStatus.succeeded,
            [RUNNING],
            True,
            summary=summary,
            chunks_done=chunks_total,
            chunks_total=chunks_total,
            error_type=None,
            error_detail=None,
        )

    async def cancel(self, job_id: str) -> bool:
        # cancelling → cancelled by whoever sees it (the owner between chunks, or a redelivery).
        return await self._finish(job_id, JobStatus.cancelled, [CANCELLING], False)

    async def fail(self, job_id: str, error_type: str, detail: str, msg: JobMessage | None) -> bool:
        t = now()
        async with self.db.transaction() as s:
            res = await s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status.in_([RUNNING, JobStatus.queued.value]))
                .values(
                    status=JobStatus.failed.value,
                    finished_at=t,
                    updated_at=t,
                    lease_owner=None,
                    lease_expires_at=None,
                    error_type=error_type,
                    error_detail=detail[:2000],
                )
            )
            if res.rowcount != 1:
                return False
            ev = JobEvent(event_id=f"{job_id}:failed", job_id=job_id, type="job.failed", at=t)
            enqueue(s, kafka.EVENTS, job_id, ev.model_dump(mode="json"))
            if msg is not None:
                dead = msg.model_copy(update={"last_error": detail[:2000]})
                enqueue(s, kafka.JOBS_DLQ, job_id, dead.model_dump(mode="json"))
            return True

    async def schedule_retry(self, job_id: str, msg: JobMessage, error: str, delay_s: float) -> bool:
        """running → queued, with the retry message in the same transaction (outbox)."""
        t = now()
        async with self.db.transaction() as s:
            res = await s.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == self.owner, Job.status == RUNNING)
                .values(
                    status=JobStatus.queued.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    error_detail=f"retrying: {error[:1000]}",
                    updated_at=t,
                )
            )
            if res.rowcount != 1:
                return False
            retry = msg.model_copy(
                update={
                    "attempt": msg.attempt + 1,
                    "last_error": error[:2000],
                    "enqueued_at": t,
                    "not_before": t + timedelta(seconds=delay_s),
                }
            )
            enqueue(s, kafka.JOBS_RETRY, job_id, retry.model_dump(mode="json"))
            return True
