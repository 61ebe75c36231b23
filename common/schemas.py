"""API and event schemas shared by the services (pydantic v2)."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, EmailStr, Field, field_validator

from common.webhook_url import MAX_WEBHOOK_URL_LENGTH, validate_submitted

# Public limits, named in every 4xx that enforces them.
MAX_TEXT_BYTES = 10_000_000  # 10 MB of UTF-8 text per job (claim-check in the store)
MAX_SUMMARY_TOKENS = 512
DEFAULT_REALTIME_SUMMARY_TOKENS = 128
DEFAULT_ASYNC_SUMMARY_TOKENS = 256
MAX_METADATA_BYTES = 4096


# The Idempotency-Key header: printable ASCII without leading or trailing spaces, 1-255 characters
# (the IETF draft's key is a structured-field string). An empty or non-ASCII key used to get
# through, and once re-sent by the gateway no longer matched what its internal token was signed for.
IDEMPOTENCY_KEY_PATTERN = r"^[!-~](?:[ -~]{0,253}[!-~])?$"


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
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class NotificationStatus(StrEnum):
    """One (job, channel) delivery: pending until sent, or failed after every attempt."""

    pending = "pending"
    sent = "sent"
    failed = "failed"

    @property
    def settled(self) -> bool:
        return self is not NotificationStatus.pending


class Notify(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: EmailStr | None = None
    webhook_url: AnyHttpUrl | None = None

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _webhook_url_short(cls, v: Any) -> Any:
        # before parsing: a huge string is refused unread, with the limit named
        if isinstance(v, str) and len(v) > MAX_WEBHOOK_URL_LENGTH:
            raise ValueError(f"webhook URL is {len(v)} characters; the limit is {MAX_WEBHOOK_URL_LENGTH}")
        return v

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url_safe(cls, v: AnyHttpUrl | None) -> AnyHttpUrl | None:
        # SSRF guard, static checks only (no DNS in the request path); the notifier checks the
        # resolved addresses again at send time (common/webhook_url.py)
        if v is not None:
            validate_submitted(str(v))
        return v


# the first character that is not whitespace, C0/C1 control, or a zero-width / format character
_VISIBLE = re.compile(
    r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8]"
)


class SummaryRequest(BaseModel):
    """Body of ``POST /v1/summaries``."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="The text to summarize (UTF-8, at most 10 MB).")
    mode: Mode = Mode.auto
    # strict: a JSON string ("5") or a boolean (true) is refused, not coerced (issue #14 item 9)
    max_summary_tokens: int | None = Field(default=None, ge=1, le=MAX_SUMMARY_TOKENS, strict=True)
    language: str = Field(default="auto", pattern=r"^(auto|[a-z]{2,3}(-[A-Za-z]{2,4})?)$")
    notify: Notify | None = None
    metadata: dict[str, Any] | None = None
    stream: bool = Field(
        default=False,
        strict=True,
        description=(
            "true (or the header `Accept: text/event-stream`): the summary comes back as Server-Sent Events, "
            "`token` events as the text is generated, then one `summary` event (the RealtimeSummary, with "
            "`timings.ttft_ms`). Realtime only: `mode: auto` is then served realtime whatever the text's "
            "length (413 over the realtime limit), `mode: async` is refused (422)."
        ),
    )

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, v: str) -> str:
        # Visible: not whitespace, not a control or format character (NUL, U+200B zero-width
        # space, U+FEFF, soft hyphen...): a text made only of those has nothing to summarize.
        # A regex, not a per-character loop: it stops at the first visible character, and
        # scans a 10 MB text of invisibles in C.
        if not _VISIBLE.search(v):
            raise ValueError(
                "text must contain at least one visible, non-whitespace character "
                "(not only control or zero-width characters)"
            )
        # The 10 MB size limit is enforced by the services as 413 (not 422), see check_text_size.
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata_small(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            import json

            size = len(json.dumps(v).encode())
            if size > MAX_METADATA_BYTES:
                raise ValueError(f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
        return v


def text_size_problem(text: str, limit: int = MAX_TEXT_BYTES):
    """A 413 problem when ``text`` exceeds ``limit`` UTF-8 bytes, else None."""
    from common.problems import Problem

    size = len(text.encode("utf-8"))
    if size > limit:
        return Problem(
            413,
            "text-too-large",
            "Text too large",
            f"text is {size} bytes; the limit is {limit} bytes of UTF-8 text",
            limit_bytes=limit,
            size_bytes=size,
        )
    return None


def realtime_too_long_problem(input_tokens: int, limit: int):
    """The 413 of a text over the realtime token limit (realtime_svc; the gateway's dry run)."""
    from common.problems import Problem

    return Problem(
        413,
        "text-too-long-for-realtime",
        "Text too long for realtime",
        f"text has {input_tokens} tokens; realtime accepts at most {limit} tokens. "
        "Send it with mode=async (or mode=auto) instead.",
        limit_tokens=limit,
        input_tokens=input_tokens,
    )


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int


class RealtimeSummary(BaseModel):
    id: str
    mode: Literal["realtime"] = "realtime"
    summary: str
    model: str
    usage: Usage
    timings: dict[str, float]


# Public values (the 202's spill_reason, the gateway's precis_gateway_spillover_total{reason}) that
# say nothing about the deployment; realtime_svc names the same reason in REFUSED_BEFORE_START_HEADER.
class SpillReason(StrEnum):
    """Why a short `mode: auto` text became an async job: realtime could not take it at once."""

    realtime_at_capacity = "realtime_at_capacity"  # realtime_svc's in-flight cap is reached
    model_queue_full = "model_queue_full"  # the model server's queue is full (or timed the request out unstarted)
    realtime_wait_too_long = "realtime_wait_too_long"  # the estimated wait is over the gateway's bound


class AsyncAccepted(BaseModel):
    id: str
    mode: Literal["async"] = "async"
    status: JobStatus
    status_url: str
    # Added members (optional, so a 202 without them still validates): how this request was routed.
    route_reason: Literal["explicit", "threshold", "spilled_over"] | None = Field(
        default=None,
        description=(
            "Why this request became a job: `explicit` (`mode: async`), `threshold` (`mode: auto`, over the "
            "routing threshold) or `spilled_over` (`mode: auto`, short enough for realtime, but realtime "
            "could not take it at once: see `spill_reason`)."
        ),
    )
    spill_reason: SpillReason | None = Field(
        default=None,
        description=(
            "Set when `route_reason` is `spilled_over`: `realtime_at_capacity` (realtime is at its in-flight "
            "limit), `model_queue_full` (the realtime model's queue is full) or `realtime_wait_too_long` "
            "(the estimated realtime wait is over the configured bound)."
        ),
    )


class Progress(BaseModel):
    chunks_done: int = 0
    chunks_total: int = 0


class JobError(BaseModel):
    type: str
    detail: str


class JobView(BaseModel):
    id: str
    status: JobStatus
    progress: Progress
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    summary: str | None = None
    error: JobError | None = None
    notifications: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = None
    # Retention: when the document and summary are (or were) deleted; set once the job finished.
    expires_at: datetime | None = None
    # Set once the job has expired (GET answers 410; a listing shows it, without summary or metadata).
    expired_at: datetime | None = None


class WorkerThroughput(BaseModel):
    """The workers' recent pace, as the store shows it (``GET /internal/throughput``)."""

    window_s: int = Field(description="How far back finished jobs are counted.")
    jobs: int = Field(description="Jobs that succeeded in the window (at most a bounded sample of the latest).")
    model_calls: int = Field(description="Model calls those jobs made (their chunks_total).")
    busy_s: float = Field(description="Time in the window during which at least one of those jobs was running.")
    model_calls_per_s: float | None = Field(
        description="model_calls / busy_s: the pace while working; null without a finished job in the window."
    )


class Estimate(BaseModel):
    """``POST /v1/summaries?dry_run=true``: what the request would cost; nothing was created."""

    dry_run: Literal[True] = True
    mode: Literal["realtime", "async"] = Field(description="The path the request would take.")
    input_tokens: int = Field(description="Tokens of the text, counted with the model's tokenizer.")
    chunks: int = Field(description="Map-reduce chunks (the worker's chunking); 1 for realtime.")
    model_calls: int = Field(
        description=(
            "Model calls: one per chunk plus the reduce calls, planned with every intermediate summary "
            "at its full token budget (a run makes at most this many; this many when they use it all). "
            "The job's progress.chunks_total counts the same calls."
        )
    )
    reduce_levels: int = Field(description="Reduce levels after the map (0 for a single chunk).")
    queue_ahead_calls: int | None = Field(
        default=None,
        description="Model calls of the queued and running jobs (every tenant's) ahead of this one; async only.",
    )
    eta_s: float | None = Field(
        description="Seconds until the summary would be ready, from the workers' recent pace; null when unknown."
    )
    eta_basis: str = Field(description="How eta_s was computed, or why it is null.")
    throughput: WorkerThroughput | None = Field(default=None, description="The pace eta_s is based on (async only).")


MAX_LIST_LIMIT = 100  # GET /v1/summaries?limit=
DEFAULT_LIST_LIMIT = 20


class JobList(BaseModel):
    """``GET /v1/summaries``: one page of the caller's jobs, newest first."""

    items: list[JobView]
    # Pass as ?cursor= for the next (older) page; null on the last page.
    next_cursor: str | None = None


# ---- internal HTTP bodies ------------------------------------------------------------------


# gateway → realtime_svc, for mode=auto only: "refuse instead of queueing when the estimated wait
# is over this many milliseconds" (realtime_svc/load.py). A header, not a RealtimeRequest member:
# a realtime_svc that predates it ignores a header, where its extra="forbid" body would be a 422
# for every request during a rolling upgrade. Unsigned (the token binds method, path and body):
# all it can do is make realtime_svc refuse a request sooner, which the token's holder could
# have by not sending it.
MAX_WAIT_HEADER = "Precis-Max-Wait-Ms"
# realtime_svc → gateway, on a 503 only: this request was refused before any generation started
# (the value is a SpillReason), so another path may run it without doing the work twice. Its
# absence means nothing is known (a timeout, a model error): the gateway never spills then.
# The gateway never relays it (gateway/upstream.py forward() keeps Retry-After only).
REFUSED_BEFORE_START_HEADER = "Precis-Refused-Before-Start"


class RealtimeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    max_summary_tokens: int = Field(default=DEFAULT_REALTIME_SUMMARY_TOKENS, ge=1, le=MAX_SUMMARY_TOKENS)
    language: str = "auto"
    request_id: str
    stream: bool = False  # Server-Sent Events (realtime_svc/routers/summarize.py)


class QueueAhead(BaseModel):
    """The unfinished work in the store: running jobs' remaining calls (their plan is known) and
    queued jobs' (not started: estimated from their document bytes at the recent calls per byte)."""

    running_jobs: int
    queued_jobs: int
    model_calls: int | None  # None: queued jobs with no plan yet and no recent calls-per-byte to estimate them


class ThroughputReport(BaseModel):
    """``GET /internal/throughput`` (async_svc → the gateway's dry run)."""

    throughput: WorkerThroughput
    queue: QueueAhead
    max_document_bytes: int  # async_svc's intake limit (413 over it)


# ---- Kafka messages --------------------------------------------------------------------------


class JobParams(BaseModel):
    """A job's parameters: stored in ``jobs.params`` and carried by every job message; readers go
    through this schema (its defaults), never through ``dict.get`` with defaults of their own."""

    max_summary_tokens: int = DEFAULT_ASYNC_SUMMARY_TOKENS
    language: str = "auto"


class JobMessage(BaseModel):
    """Value on ``precis.jobs`` / ``precis.jobs.retry`` / ``precis.jobs.dlq`` (document stays in the store)."""

    job_id: str
    tenant: str
    attempt: int = 1
    params: JobParams
    enqueued_at: datetime
    not_before: datetime | None = None
    last_error: str | None = None


EventType = Literal["job.succeeded", "job.failed", "job.cancelled"]


class JobEvent(BaseModel):
    """Value on ``precis.events``."""

    event_id: str
    job_id: str
    type: EventType
    at: datetime
