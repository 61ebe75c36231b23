"""The job state machine: every change of ``jobs.status`` goes through this module.

    queued ──claim──▶ running ──succeed──▶ succeeded
      │  ▲              │ │ └──fail─────▶ failed ◀──fail── queued
      │  └───retry──────┘ └──cancel──▶ cancelling ──settle──▶ cancelled
      └──────────────cancel──────────────────────────────────▶ cancelled

The promise: however many times a message is delivered, and however the API's cancel, the
workers' claims, lease expiries and retries interleave, a job reaches exactly one terminal state
and emits exactly one terminal event. Three rules keep it, here and nowhere else:

* every transition is a compare-and-set: one conditional UPDATE on the current status (and, for
  a worker's writes, on its lease), so of two racing writers exactly one matches a row;
* the terminal event (and any message the transition sends: retry, DLQ) is an outbox row written
  in the same transaction as the status, so it exists iff the transition committed;
* a lease (owner, expiry) says which worker runs a job; an expired lease is taken over, and a
  worker whose lease moved on writes nothing (:class:`LeaseLost`).

tests/integration/test_transitions.py drives random interleavings of these against SQLite and
PostgreSQL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from common import topics
from common.outbox import enqueue
from common.schemas import TERMINAL_STATES, JobEvent, JobMessage, JobStatus
from common.store.db import Database
from common.store.models import Job
from common.store.retention import DEFAULT_RETENTION

QUEUED, RUNNING, CANCELLING = JobStatus.queued, JobStatus.running, JobStatus.cancelling
SUCCEEDED, FAILED, CANCELLED = JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled

# Every transition the platform makes, and no other. running → running is a claim that takes
# over an expired lease (or the owner's own redelivery).
ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    QUEUED: frozenset({RUNNING, CANCELLED, FAILED}),
    RUNNING: frozenset({RUNNING, QUEUED, CANCELLING, SUCCEEDED, FAILED}),
    CANCELLING: frozenset({CANCELLED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}
# Attempts of a cancel against a job that keeps moving between queued and running (retries).
_CANCEL_ROUNDS = 5
# A job's detail texts are bounded (the DLQ message and the API view carry them).
MAX_ERROR_CHARS = 2000


def now() -> datetime:
    return datetime.now(UTC)


class LeaseLost(Exception):
    """Another worker owns the job now (or it was finished): stop without writing."""


@dataclass(frozen=True)
class Lease:
    """Which worker holds a job, for how long at a time (renewed while it works)."""

    owner: str
    ttl: timedelta

    @classmethod
    def of(cls, owner: str, ttl_s: float) -> Lease:
        return cls(owner, timedelta(seconds=ttl_s))

    def held(self, job_id: str, *states: JobStatus) -> list[ColumnElement[bool]]:
        """The WHERE clause of a write only the lease holder may make (in one of ``states``)."""
        return [Job.id == job_id, Job.lease_owner == self.owner, Job.status.in_(states or (RUNNING, CANCELLING))]


@dataclass(frozen=True)
class RetryPolicy:
    """Job-level retries: ``max_attempts`` runs, exponential backoff between them."""

    max_attempts: int
    backoff_s: float
    backoff_max_s: float

    def delay_s(self, attempts: int) -> float:
        return min(self.backoff_s * (2 ** (attempts - 1)), self.backoff_max_s)


class Outcome(enum.StrEnum):
    """What a failed attempt led to (worker metrics and logs use the values)."""

    failed = "failed"
    retry = "retry"
    superseded = "superseded"  # the job was no longer this worker's to fail (cancelled, taken over)


class CancelResult(enum.Enum):
    not_found = "not_found"
    cancelled = "cancelled"  # queued → cancelled, the event is written
    cancelling = "cancelling"  # running → cancelling, the worker stops between chunks
    unchanged = "unchanged"  # already cancelling, or terminal (see the job's status)


def jobs_key(tenant: str) -> str:
    """Kafka key of a job's messages (``precis.jobs``, ``precis.jobs.retry``): its tenant.

    Fair sharing between tenants: one tenant's jobs all go to one partition (of each topic), so a
    tenant with hundreds of queued jobs holds one partition's queue, not every partition's, and
    another tenant's job lands (in general) on a different partition, polled beside it rather
    than behind it; the worker's model calls are then shared round-robin between the tenants
    (worker/mapreduce.py ``FairSlots``). The cost: one tenant's jobs are taken by one consumer
    at a time (up to ``max_poll_records`` of them run at once in it)."""
    return tenant


async def add_queued(session: AsyncSession, jobs: list[tuple[Job, dict[str, Any]]]) -> None:
    """New jobs: ``queued``, each with its ``precis.jobs`` message in the caller's transaction."""
    for job, _ in jobs:
        job.status = QUEUED
    session.add_all([job for job, _ in jobs])
    await session.flush()  # the job rows exist before the outbox rows that point at them
    for job, message in jobs:
        enqueue(session, topics.JOBS, jobs_key(job.tenant), message)


def _event(session: AsyncSession, job_id: str, status: JobStatus, t: datetime) -> None:
    """The job's one terminal event, in the transaction that made it terminal."""
    assert status in TERMINAL_STATES
    ev = JobEvent(event_id=f"{job_id}:{status.value}", job_id=job_id, type=f"job.{status.value}", at=t)  # type: ignore[arg-type]
    enqueue(session, topics.EVENTS, job_id, ev.model_dump(mode="json"))


async def _cas(
    session: AsyncSession,
    job_id: str,
    to: JobStatus,
    sources: tuple[JobStatus, ...],
    *where: ColumnElement[bool],
    retention: timedelta = DEFAULT_RETENTION,
    **values: Any,
) -> bool:
    """Compare-and-set ``sources → to``; a terminal ``to`` writes the event too, and stamps
    ``expires_at`` (terminal time + ``retention``, common/store/retention.py). True if it matched."""
    for src in sources:
        assert to in ALLOWED[src], f"{src} → {to} is not a job transition"
    t = values.setdefault("updated_at", now())
    if to in TERMINAL_STATES:
        values.update(finished_at=t, lease_owner=None, lease_expires_at=None, expires_at=t + retention)
    res = await session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(sources), *where).values(status=to, **values)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return False
    if to in TERMINAL_STATES:
        _event(session, job_id, to, t)
    return True


class JobTransitions:
    """The job state machine on one store. Worker-side transitions take the worker's :class:`Lease`."""

    def __init__(self, db: Database, retention: timedelta = DEFAULT_RETENTION) -> None:
        self.db = db
        # How long a finished job keeps its document and summary (PRECIS_RETENTION_DAYS).
        self.retention = retention

    async def load(self, job_id: str) -> Job | None:
        """The job's row, without its document (deferred in the model: status checks load no megabytes)."""
        async with self.db.session() as s:
            return await s.get(Job, job_id)

    # ---- the API side ------------------------------------------------------------------------

    async def request_cancel(self, job_id: str, tenant: str | None = None) -> tuple[CancelResult, Job | None]:
        """queued → cancelled (event now); running → cancelling (the worker stops between chunks).

        Each step is a compare-and-set on the status: a worker may claim the job (queued → running)
        between our read and our write, in which case the queued → cancelled update matches nothing
        and the running → cancelling one must still be tried, or the cancel would be lost while the
        client was told 200. Returns the result and the job as it is after the transaction (None
        for an unknown job or another tenant's)."""
        async with self.db.transaction() as s:
            # Job.document is deferred (models.py): a cancel never loads it, nor do the refreshes.
            job = await s.get(Job, job_id)
            if job is None or (tenant is not None and job.tenant != tenant):
                return CancelResult.not_found, None
            result = CancelResult.unchanged
            # A worker's retry may move the job running → queued between the two updates (on
            # PostgreSQL each statement sees the latest commit): then try again, from the top.
            for _ in range(_CANCEL_ROUNDS):
                if await _cas(s, job_id, CANCELLED, (QUEUED,), retention=self.retention):
                    result = CancelResult.cancelled
                    break
                if await _cas(s, job_id, CANCELLING, (RUNNING,)):
                    result = CancelResult.cancelling
                    break
                await s.refresh(job)
                if job.status not in (QUEUED, RUNNING):
                    break
            await s.refresh(job)
            return result, job

    # ---- the worker side ---------------------------------------------------------------------

    async def claim(self, job_id: str, lease: Lease, max_attempts: int | None = None) -> Job | None:
        """queued → running (or take over an expired lease); returns the job when ``lease`` now
        holds it, else None. The job comes without its document (deferred: a claim that waits or
        fails must not hold megabytes; :meth:`document` loads it when the job runs).

        Every claim counts an attempt, so a run that ends with no outcome at all (the worker
        SIGKILLed or OOM-killed mid-job, where no except clause runs) still counts. With
        ``max_attempts``, a claim that would start run ``max_attempts + 1`` fails the job instead
        (failed, one ``job.failed`` event and a dead letter, in this transaction) and returns None."""
        t = now()
        claimable = or_(
            Job.status == QUEUED,
            (Job.status == RUNNING) & or_(Job.lease_expires_at < t, Job.lease_owner == lease.owner),
        )
        within = [Job.attempts < max_attempts] if max_attempts is not None else []
        async with self.db.transaction() as s:
            res = await s.execute(
                update(Job)
                .where(Job.id == job_id, claimable, *within)
                .values(
                    status=RUNNING,
                    lease_owner=lease.owner,
                    lease_expires_at=t + lease.ttl,
                    attempts=Job.attempts + 1,
                    started_at=func.coalesce(Job.started_at, t),
                    updated_at=t,
                )
                .returning(Job.id)
            )
            if res.scalar_one_or_none() is not None:
                return await s.get(Job, job_id, populate_existing=True)
            if max_attempts is not None:
                await self._exhausted(s, job_id, claimable, max_attempts)
            return None

    async def _exhausted(self, s: AsyncSession, job_id: str, claimable: ColumnElement[bool], max_attempts: int) -> None:
        """A claimable job with no attempt left: its last run ended without an outcome."""
        job = await s.get(Job, job_id)
        if job is None:
            return
        detail = (
            f"gave up after {job.attempts} attempts (the limit is {max_attempts}): the last one ended "
            "without an outcome (the worker stopped or was killed while running the job)"
        )
        if await _cas(
            s,
            job_id,
            FAILED,
            (QUEUED, RUNNING),
            claimable,
            Job.attempts >= max_attempts,
            error_type="attempts_exhausted",
            error_detail=detail,
        ):
            dead = JobMessage(
                job_id=job_id,
                tenant=job.tenant,
                attempt=job.attempts,
                params=job.params,
                enqueued_at=now(),
                last_error=detail,
            )
            enqueue(s, topics.JOBS_DLQ, job_id, dead.model_dump(mode="json"))

    async def document(self, job_id: str) -> str | None:
        """The job's document alone (the claim defers it)."""
        async with self.db.session() as s:
            return (await s.execute(select(Job.document).where(Job.id == job_id))).scalar_one_or_none()

    async def renew(self, job_id: str, lease: Lease) -> JobStatus:
        """Extend the lease; returns the job status. Raises LeaseLost if it is no longer ours."""
        async with self.db.transaction() as s:
            res = await s.execute(
                update(Job).where(*lease.held(job_id)).values(lease_expires_at=now() + lease.ttl).returning(Job.status)
            )
            status = res.scalar_one_or_none()
            if status is None:
                raise LeaseLost(job_id)
            return JobStatus(status)

    async def release(self, job_id: str, lease: Lease) -> None:
        """Give the job back (rebalance, shutdown): the next delivery takes it over at once. A run
        given back this way is not a spent attempt (the claim counted it; this takes it back), so
        rebalances never use up a job's attempts; a crashed run gives nothing back and counts."""
        async with self.db.transaction() as s:
            await s.execute(
                update(Job)
                .where(*lease.held(job_id, RUNNING))
                .values(
                    lease_expires_at=now() - timedelta(seconds=1),
                    attempts=func.max(Job.attempts - 1, 0) if self.db.is_sqlite else func.greatest(Job.attempts - 1, 0),
                )
            )

    async def guarded(self, session: AsyncSession, job_id: str, lease: Lease, **values: Any) -> JobStatus:
        """A lease-holder's write that changes no status (progress, checkpoints), in the caller's
        transaction; returns the job status (for cancellation). Raises LeaseLost."""
        values.setdefault("updated_at", now())
        res = await session.execute(update(Job).where(*lease.held(job_id)).values(**values).returning(Job.status))
        status = res.scalar_one_or_none()
        if status is None:
            raise LeaseLost(job_id)
        return JobStatus(status)

    async def succeed(self, job_id: str, lease: Lease, summary: str, chunks_total: int) -> bool:
        async with self.db.transaction() as s:
            return await _cas(
                s,
                job_id,
                SUCCEEDED,
                (RUNNING,),
                Job.lease_owner == lease.owner,
                retention=self.retention,
                summary=summary,
                chunks_done=chunks_total,
                chunks_total=chunks_total,
                error_type=None,
                error_detail=None,
            )

    async def settle_cancel(self, job_id: str) -> bool:
        # cancelling → cancelled by whoever sees it (the owner between chunks, or a redelivery).
        async with self.db.transaction() as s:
            return await _cas(s, job_id, CANCELLED, (CANCELLING,), retention=self.retention)

    async def fail(self, job_id: str, error_type: str, detail: str, msg: JobMessage | None) -> bool:
        """running/queued → failed, with the dead letter (``msg``) in the same transaction."""
        detail = detail[:MAX_ERROR_CHARS]
        async with self.db.transaction() as s:
            if not await _cas(
                s,
                job_id,
                FAILED,
                (RUNNING, QUEUED),
                retention=self.retention,
                error_type=error_type,
                error_detail=detail,
            ):
                return False
            if msg is not None:
                dead = msg.model_copy(update={"last_error": detail})
                enqueue(s, topics.JOBS_DLQ, job_id, dead.model_dump(mode="json"))
            return True

    async def schedule_retry(self, job_id: str, lease: Lease, msg: JobMessage, error: str, delay_s: float) -> bool:
        """running → queued, with the retry message in the same transaction (outbox)."""
        t = now()
        async with self.db.transaction() as s:
            if not await _cas(
                s,
                job_id,
                QUEUED,
                (RUNNING,),
                Job.lease_owner == lease.owner,
                lease_owner=None,
                lease_expires_at=None,
                error_detail=f"retrying: {error[:1000]}",
                updated_at=t,
            ):
                return False
            retry = msg.model_copy(
                update={
                    "attempt": msg.attempt + 1,
                    "last_error": error[:MAX_ERROR_CHARS],
                    "enqueued_at": t,
                    "not_before": t + timedelta(seconds=delay_s),
                }
            )
            enqueue(s, topics.JOBS_RETRY, jobs_key(msg.tenant), retry.model_dump(mode="json"))
            return True

    async def fail_or_retry(
        self,
        msg: JobMessage,
        lease: Lease,
        policy: RetryPolicy,
        attempts: int,
        error: str,
        *,
        permanent: bool,
    ) -> tuple[Outcome, float]:
        """A failed attempt: fail the job (permanent error, or out of attempts: one event, one
        dead letter) or schedule its retry after the policy's backoff. Returns (outcome, delay)."""
        if permanent or attempts >= policy.max_attempts:
            why = error if permanent else f"gave up after {attempts} attempts; last error: {error}"
            done = await self.fail(msg.job_id, "invalid_input" if permanent else "model_error", why, msg)
            outcome = Outcome.failed
            delay = 0.0
        else:
            delay = policy.delay_s(attempts)
            done = await self.schedule_retry(msg.job_id, lease, msg, error, delay)
            outcome = Outcome.retry
        if not done:
            # Not ours to fail any more: a cancel came in meanwhile (settle it, or the job would
            # stay cancelling with nobody to finish it), or another worker took the job over.
            await self.settle_cancel(msg.job_id)
            outcome = Outcome.superseded
        return outcome, delay

    async def status(self, job_id: str) -> JobStatus | None:
        async with self.db.session() as s:
            return (await s.execute(select(Job.status).where(Job.id == job_id))).scalar_one_or_none()
