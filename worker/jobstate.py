"""One worker's view of the job store: its lease on the state machine (common/store/transitions.py,
where every status change and its rules live) plus the map-reduce checkpoints. Every write is
conditional on the lease, so however many times a message is delivered, a job reaches exactly
one terminal state and emits one event."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from common.schemas import JobMessage, JobStatus
from common.store import ChunkResult, Database, Job
from common.store.retention import DEFAULT_RETENTION
from common.store.transitions import JobTransitions, Lease, LeaseLost, Outcome, RetryPolicy, now

__all__ = ["Cancelled", "JobStore", "LeaseLost"]


class Cancelled(Exception):
    """The job was cancelled while running."""


class JobStore:
    def __init__(
        self,
        db: Database,
        owner: str,
        lease_ttl_s: float,
        max_attempts: int | None = None,
        retention: timedelta = DEFAULT_RETENTION,
    ) -> None:
        self.db = db
        self.owner = owner
        self.lease = Lease.of(owner, lease_ttl_s)
        self.max_attempts = max_attempts
        self.transitions = JobTransitions(db, retention)

    async def load(self, job_id: str) -> Job | None:
        return await self.transitions.load(job_id)

    async def take(self, job_id: str) -> Job | None:
        """Claim the job (without its document); the job when this worker now owns it. A claim
        past ``max_attempts`` fails the job instead (crashed runs count too)."""
        return await self.transitions.claim(job_id, self.lease, self.max_attempts)

    async def document(self, job_id: str) -> str | None:
        return await self.transitions.document(job_id)

    async def claim(self, job_id: str) -> bool:
        """queued → running (or take over an expired lease). True when this worker now owns it."""
        return await self.take(job_id) is not None

    async def renew(self, job_id: str) -> JobStatus:
        return await self.transitions.renew(job_id, self.lease)

    async def release(self, job_id: str) -> None:
        await self.transitions.release(job_id, self.lease)

    async def set_total(self, job_id: str, total: int, done: int) -> None:
        async with self.db.transaction() as s:
            try:
                await self.transitions.guarded(s, job_id, self.lease, chunks_total=total, chunks_done=done)
            except LeaseLost:
                pass  # the next checkpoint write says so (and stops the job)

    async def checkpoints(self, job_id: str, level: int) -> dict[int, tuple[str, str]]:
        async with self.db.session() as s:
            rows = (
                (await s.execute(select(ChunkResult).where(ChunkResult.job_id == job_id, ChunkResult.level == level)))
                .scalars()
                .all()
            )
            return {r.idx: (r.input_sha256, r.summary) for r in rows}

    async def save_chunk(self, job_id: str, level: int, idx: int, input_sha: str, summary: str) -> JobStatus:
        """Checkpoint one chunk summary and bump progress; returns the job status (for cancellation)."""
        t = now()
        async with self.db.transaction() as s:
            existing = await s.get(ChunkResult, (job_id, level, idx))
            if existing is None:
                s.add(ChunkResult(job_id=job_id, level=level, idx=idx, input_sha256=input_sha, summary=summary))
            else:
                existing.input_sha256, existing.summary = input_sha, summary
            return await self.transitions.guarded(
                s,
                job_id,
                self.lease,
                chunks_done=Job.chunks_done + 1,
                lease_expires_at=t + self.lease.ttl,
                updated_at=t,
            )

    async def succeed(self, job_id: str, summary: str, chunks_total: int) -> bool:
        return await self.transitions.succeed(job_id, self.lease, summary, chunks_total)

    async def cancel(self, job_id: str) -> bool:
        return await self.transitions.settle_cancel(job_id)

    async def fail(self, job_id: str, error_type: str, detail: str, msg: JobMessage | None) -> bool:
        return await self.transitions.fail(job_id, error_type, detail, msg)

    async def schedule_retry(self, job_id: str, msg: JobMessage, error: str, delay_s: float) -> bool:
        return await self.transitions.schedule_retry(job_id, self.lease, msg, error, delay_s)

    async def fail_or_retry(
        self, msg: JobMessage, policy: RetryPolicy, attempts: int, error: str, *, permanent: bool
    ) -> tuple[Outcome, float]:
        return await self.transitions.fail_or_retry(msg, self.lease, policy, attempts, error, permanent=permanent)
