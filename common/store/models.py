"""Tables. Schema changes go through Alembic (``common/migrations``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from common.schemas import JobParams, JobStatus, NotificationStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class StatusType(TypeDecorator):
    """A ``StrEnum`` stored as its plain string (the column stays ``VARCHAR(16)``; no migration)
    and read back as the enum, so code compares statuses, never bare strings."""

    impl = String(16)
    cache_ok = True

    def __init__(self, enum: type[JobStatus] | type[NotificationStatus]) -> None:
        super().__init__()
        self.enum = enum

    def process_bind_param(self, value, dialect):
        return None if value is None else self.enum(value).value

    def process_result_value(self, value, dialect):
        return None if value is None else self.enum(value)


class ParamsType(TypeDecorator):
    """``jobs.params`` as :class:`JobParams` (JSON in the column, validated on the way in and out)."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return JobParams.model_validate(value).model_dump(mode="json")

    def process_result_value(self, value, dialect):
        return None if value is None else JobParams.model_validate(value)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime()}


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[JobStatus] = mapped_column(StatusType(JobStatus), index=True)
    params: Mapped[JobParams] = mapped_column(ParamsType)
    # Claim-check: the document itself stays here; Kafka carries only the job id. Deferred: no
    # load of a Job reads it (GET, cancel, the notifier, claims); the worker selects it alone
    # (JobTransitions.document) when it runs the job. Up to 10 MB, it is the row's bulk.
    document: Mapped[str] = mapped_column(Text, deferred=True)
    document_bytes: Mapped[int] = mapped_column(Integer)
    request_hash: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    notify: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, nullable=True)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    chunks_total: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Lease: which worker runs the job and until when (renewed while it works). A redelivered
    # message for a job whose lease is live waits; an expired lease (dead worker) is taken over.
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Retention (migration 0003, common/store/retention.py): stamped by the terminal transition
    # (finish time + PRECIS_RETENTION_DAYS); set ``expired_at`` when the sweeper has deleted the
    # document, checkpoints and summary (the row stays as a tombstone: GET answers 410).
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    expired_at: Mapped[datetime | None] = mapped_column(nullable=True)

    __table_args__ = (
        UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idem"),
        # Listing (GET /v1/summaries): newest first by the keyset (created_at, id), per tenant,
        # optionally per status; both are read backwards by the ORDER BY … DESC.
        Index("ix_jobs_tenant_created", "tenant", "created_at", "id"),
        Index("ix_jobs_tenant_status_created", "tenant", "status", "created_at", "id"),
        # The dry-run estimate's recent pace: jobs that succeeded in the last hour (migration 0004).
        Index("ix_jobs_status_finished", "status", "finished_at"),
        # The sweeper's due rows; tombstones (expired_at set) leave the index, so it does not grow
        # with the history.
        Index(
            "ix_jobs_expiry_due",
            "expires_at",
            postgresql_where=text("expired_at IS NULL"),
            sqlite_where=text("expired_at IS NULL"),
        ),
    )


class ChunkResult(Base):
    """Checkpoint of one finished chunk summary (map level 0, reduce levels 1..n)."""

    __tablename__ = "chunk_results"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    level: Mapped[int] = mapped_column(Integer, primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    input_sha256: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxMessage(Base):
    """Transactional outbox: a Kafka message written in the same transaction as the state change."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(128))
    key: Mapped[str] = mapped_column(String(128))
    value: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # Which relay is publishing the row, until when (a dead relay's claim expires; migration 0002).
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(nullable=True)

    __table_args__ = (Index("ix_outbox_unpublished", "published_at", "id"),)


class Notification(Base):
    """One row per (job, channel): the notifier's dedup record across redeliveries."""

    __tablename__ = "notifications"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[NotificationStatus] = mapped_column(StatusType(NotificationStatus))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
