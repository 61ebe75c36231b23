"""Job intake, lookup and cancellation against the store. Pure data logic; no HTTP here."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from async_svc.intake import GroupCommitter, TenantQuota, write_jobs
from common.problems import Problem
from common.schemas import (
    DEFAULT_ASYNC_SUMMARY_TOKENS,
    JobError,
    JobMessage,
    JobParams,
    JobStatus,
    JobView,
    Progress,
)
from common.store import Database, Job, Notification
from common.store.retention import DEFAULT_RETENTION, is_expired
from common.store.transitions import CancelResult, JobTransitions


def request_hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def to_view(job: Job, notifications: list[Notification] | None = None) -> JobView:
    error = JobError(type=job.error_type, detail=job.error_detail or "") if job.error_type else None
    # Past expires_at the job shows as expired even before the sweeper deleted its contents.
    expired = is_expired(job)
    return JobView(
        id=job.id,
        status=job.status,
        progress=Progress(chunks_done=job.chunks_done, chunks_total=job.chunks_total),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        summary=None if expired else job.summary,
        error=error,
        notifications=[
            {
                "channel": n.channel,
                "status": n.status.value,
                "attempts": n.attempts,
                "updated_at": n.updated_at.isoformat(),
            }
            for n in notifications
        ]
        if notifications
        else None,
        metadata=None if expired else job.metadata_,
        expires_at=job.expires_at,
        expired_at=(job.expired_at or job.expires_at) if expired else None,
    )


class Conflict(Problem):
    def __init__(self, key: str) -> None:
        super().__init__(
            409,
            "idempotency-key-reused",
            "Idempotency-Key reused with a different body",
            f"Idempotency-Key {key!r} was already used for a different request body; use a new key",
        )


class NotFound(Problem):
    def __init__(self) -> None:
        super().__init__(404, "not-found", "Not found", "no summary job with this id")


class Gone(Problem):
    """410: the job existed, but its retention period is over (its tombstone is all that is left)."""

    def __init__(self, job: Job) -> None:
        at = job.expires_at or job.expired_at
        when = at.isoformat() if at else "earlier"
        super().__init__(
            410,
            "job-expired",
            "Job expired",
            f"job {job.id} expired at {when}: its document and summary were deleted after the retention period",
            expired_at=at.isoformat() if at else None,
        )


async def create_job(
    db: Database,
    *,
    tenant: str,
    text: str,
    max_summary_tokens: int | None,
    language: str,
    notify: dict[str, Any] | None,
    metadata: dict[str, Any] | None,
    idempotency_key: str | None,
    fault: Callable[[str], None] | None = None,
    committer: GroupCommitter | None = None,
    quota: TenantQuota | None = None,
) -> tuple[Job, bool]:
    """Store the job and its Kafka message atomically. Returns (job, created).

    With a ``committer`` (async_svc's lifespan owns one), the two rows are committed together with
    the other jobs arriving at the same moment (async_svc/intake.py), under the committer's
    tenant quota; without, in a transaction of their own under ``quota`` (tests, tools). Over a
    quota raises :class:`~async_svc.intake.QuotaExceeded` (429); an idempotent replay of a stored
    job is answered before any quota (it takes no new slot)."""
    params = JobParams(max_summary_tokens=max_summary_tokens or DEFAULT_ASYNC_SUMMARY_TOKENS, language=language)
    body_hash = request_hash({"text": text, "params": params.model_dump(), "notify": notify, "metadata": metadata})
    if idempotency_key:
        existing = await _by_idempotency(db, tenant, idempotency_key)
        if existing is not None:
            if existing.request_hash != body_hash:
                raise Conflict(idempotency_key)
            return existing, False

    now = datetime.now(UTC)
    job = Job(
        id=str(uuid.uuid4()),
        tenant=tenant,
        status=JobStatus.queued,
        params=params,
        document=text,
        document_bytes=len(text.encode()),
        request_hash=body_hash,
        idempotency_key=idempotency_key,
        notify=notify,
        metadata_=metadata,
        chunks_done=0,
        chunks_total=0,
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    msg = JobMessage(job_id=job.id, tenant=tenant, attempt=1, params=params, enqueued_at=now)
    try:
        if committer is not None:
            await committer.add(job, msg.model_dump(mode="json"))
            return job, True
        refused = await write_jobs(db, [(job, msg.model_dump(mode="json"))], fault, quota)
        if job.id in refused:
            raise refused[job.id]
    except IntegrityError:
        # Two requests with one Idempotency-Key raced: the loser returns the winner's job.
        if idempotency_key:
            existing = await _by_idempotency(db, tenant, idempotency_key)
            if existing is not None:
                if existing.request_hash != body_hash:
                    raise Conflict(idempotency_key) from None
                return existing, False
        raise
    return job, True


async def _by_idempotency(db: Database, tenant: str, key: str) -> Job | None:
    async with db.session() as s:
        return (
            await s.execute(select(Job).where(Job.tenant == tenant, Job.idempotency_key == key))
        ).scalar_one_or_none()


async def get_job(db: Database, tenant: str, job_id: str) -> JobView:
    async with db.session() as s:
        job = await s.get(Job, job_id)
        # Another tenant's id answers exactly like an unknown id.
        if job is None or job.tenant != tenant:
            raise NotFound()
        if is_expired(job):
            raise Gone(job)
        notes = (await s.execute(select(Notification).where(Notification.job_id == job_id))).scalars().all()
        return to_view(job, list(notes))


async def cancel_job(db: Database, tenant: str, job_id: str, retention: timedelta = DEFAULT_RETENTION) -> JobView:
    """queued → cancelled (event now); running → cancelling (the worker stops between chunks).
    The state machine (common/store/transitions.py) makes each step a compare-and-set, so a
    cancel racing a worker's claim is never lost."""
    result, job = await JobTransitions(db, retention).request_cancel(job_id, tenant)
    if result is CancelResult.not_found:
        raise NotFound()
    if result is CancelResult.unchanged and job is not None and job.status.terminal:
        raise Problem(
            409,
            "job-finished",
            "Job already finished",
            f"job {job_id} is already {job.status}; only queued or running jobs can be cancelled",
        )
    return await get_job(db, tenant, job_id)
