"""Typed views of the Précis API's response bodies (``/v1/summaries``).

The models accept (and keep) fields they do not know, so a newer server does not break an older client.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Mode(StrEnum):
    auto = "auto"
    realtime = "realtime"
    async_ = "async"


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    cancelling = "cancelling"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Usage(_Model):
    input_tokens: int
    output_tokens: int


class RealtimeSummary(_Model):
    """``200`` answer of ``POST /v1/summaries``: the summary itself."""

    id: str
    mode: Literal["realtime"] = "realtime"
    summary: str
    model: str
    usage: Usage
    timings: dict[str, float] = Field(default_factory=dict)


class AsyncAccepted(_Model):
    """``202`` answer of ``POST /v1/summaries``: a job was created (or replayed for the same Idempotency-Key)."""

    id: str
    mode: Literal["async"] = "async"
    status: JobStatus
    status_url: str
    # Why it is a job: "explicit" (mode=async), "threshold" (mode=auto, long text) or
    # "spilled_over" (mode=auto, short, but realtime was full; spill_reason says how).
    route_reason: str | None = None
    spill_reason: str | None = None
    # Set by the client from the response: the job already existed for this Idempotency-Key.
    replayed: bool = Field(default=False, exclude=True)
    idempotency_key: str | None = Field(default=None, exclude=True)


class Progress(_Model):
    chunks_done: int = 0
    chunks_total: int = 0

    @property
    def fraction(self) -> float | None:
        """Share of chunks done, or None while the total is not known yet."""
        return self.chunks_done / self.chunks_total if self.chunks_total > 0 else None


class JobError(_Model):
    type: str
    detail: str


class JobView(_Model):
    """``GET``/``DELETE /v1/summaries/{id}``: a job's state."""

    id: str
    status: JobStatus
    progress: Progress = Field(default_factory=Progress)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    summary: str | None = None
    error: JobError | None = None
    notifications: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = None
    # Retention: when the job's document and summary are deleted (set once it finished), and when
    # they were (an expired job is listed with expired_at set; GET on it raises Gone, a 410).
    expires_at: datetime | None = None
    expired_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def expired(self) -> bool:
        return self.expired_at is not None


class JobPage(_Model):
    """``GET /v1/summaries``: one page of the caller's jobs, newest first."""

    items: list[JobView] = Field(default_factory=list)
    # Pass to ``list(cursor=...)`` for the next (older) page; None on the last page.
    next_cursor: str | None = None


class WorkerThroughput(_Model):
    """The workers' recent pace an :class:`Estimate`'s ETA is based on."""

    window_s: int
    jobs: int  # jobs that succeeded in the window
    model_calls: int
    busy_s: float
    model_calls_per_s: float | None = None  # None: no job succeeded in the window


class Estimate(_Model):
    """``200`` answer of ``POST /v1/summaries?dry_run=true``: what the request would cost (nothing was created)."""

    dry_run: Literal[True] = True
    mode: Literal["realtime", "async"]
    input_tokens: int
    chunks: int
    model_calls: int  # planned with every intermediate summary at its full budget: a run makes at most this many
    reduce_levels: int = 0
    queue_ahead_calls: int | None = None
    eta_s: float | None = None  # None when unknown: eta_basis says why
    eta_basis: str = ""
    throughput: WorkerThroughput | None = None
