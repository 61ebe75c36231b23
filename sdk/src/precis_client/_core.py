"""What the sync and async clients share: configuration, request bodies, response parsing, retry and poll timing."""

from __future__ import annotations

import os
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from precis_client.errors import (
    ConfigurationError,
    PrecisProblem,
    ServiceUnavailable,
    parse_retry_after,
    problem_from_response,
)

__all__ = ["parse_retry_after"]  # re-exported for the clients
from precis_client._version import __version__
from precis_client.models import AsyncAccepted, Estimate, JobPage, JobStatus, JobView, Mode, RealtimeSummary

DEFAULT_URL = "http://localhost:8080"
ENV_URL = "PRECIS_URL"
ENV_API_KEY = "PRECIS_API_KEY"
SUMMARIES = "/v1/summaries"
# Realtime answers within the gateway's own limit (35 s by default, then 504): wait a little longer than that.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


def user_agent() -> str:
    return f"precis-client/{__version__} httpx/{httpx.__version__}"


def resolve_config(base_url: str | None, api_key: str | None) -> tuple[str, str]:
    """Arguments first, then ``PRECIS_URL`` / ``PRECIS_API_KEY``; the URL defaults to the local stack."""
    url = (base_url or os.environ.get(ENV_URL) or DEFAULT_URL).strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"the API URL must start with http:// or https://, got {url!r}")
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY)
    if not key or not key.strip():
        raise ConfigurationError(f"no API key: pass --api-key (CLI) / api_key= (SDK), or set {ENV_API_KEY}")
    return url, key.strip()


def new_idempotency_key() -> str:
    return f"precis-client-{uuid.uuid4()}"


def submit_body(
    text: str,
    *,
    mode: Mode | str,
    max_summary_tokens: int | None,
    language: str | None,
    email: str | None,
    webhook: str | None,
    metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"text": text, "mode": Mode(mode).value}
    if max_summary_tokens is not None:
        body["max_summary_tokens"] = max_summary_tokens
    if language is not None:
        body["language"] = language
    notify = {k: v for k, v in (("email", email), ("webhook_url", webhook)) if v is not None}
    if notify:
        body["notify"] = notify
    if metadata is not None:
        body["metadata"] = metadata
    return body


def check(response: httpx.Response) -> httpx.Response:
    """The response when it is a success, else its problem raised as the typed exception."""
    if response.status_code >= 400:
        raise problem_from_response(response)
    return response


def parse_submit(response: httpx.Response, idempotency_key: str) -> RealtimeSummary | AsyncAccepted:
    data = response.json()
    if response.status_code == 202 or (isinstance(data, dict) and data.get("mode") == "async"):
        accepted = AsyncAccepted.model_validate(data)
        accepted.replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
        accepted.idempotency_key = idempotency_key
        return accepted
    return RealtimeSummary.model_validate(data)


DRY_RUN = {"dry_run": "true"}  # POST /v1/summaries?dry_run=true: an Estimate, nothing created


def parse_estimate(response: httpx.Response) -> Estimate:
    return Estimate.model_validate(response.json())


def parse_job(response: httpx.Response) -> JobView:
    return JobView.model_validate(response.json())


MAX_LIST_LIMIT = 100  # the API's bound on ?limit=


def list_params(
    status: JobStatus | str | None, created_after: datetime | None, limit: int | None, cursor: str | None
) -> dict[str, str | int]:
    """Query of ``GET /v1/summaries`` (checked here too, so a bad value fails before any request)."""
    params: dict[str, str | int] = {}
    if status is not None:
        params["status"] = JobStatus(status).value
    if created_after is not None:
        if created_after.tzinfo is None:
            raise ValueError("created_after must be timezone-aware (e.g. datetime.now(UTC))")
        params["created_after"] = created_after.isoformat()
    if limit is not None:
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
        params["limit"] = limit
    if cursor is not None:
        params["cursor"] = cursor
    return params


def parse_page(response: httpx.Response) -> JobPage:
    return JobPage.model_validate(response.json())


def job_id_of(job: str | AsyncAccepted | JobView) -> str:
    jid = job if isinstance(job, str) else job.id
    if not jid or "/" in jid:
        raise ValueError(f"not a job id: {jid!r}")
    return jid


@dataclass(frozen=True)
class RetryPolicy:
    """Transport errors, and 503 answers that carry ``Retry-After``, are sent again, at most ``max_attempts``
    times in all. The wait is the server's ``Retry-After`` when it sent one (a 503 asking for more than
    ``max_retry_after`` seconds is not retried), else exponential backoff with jitter."""

    max_attempts: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    max_retry_after: float = 30.0

    def should_retry(self, exc: BaseException) -> bool:
        if isinstance(exc, httpx.TransportError):
            return True
        if isinstance(exc, ServiceUnavailable):
            ra = exc.retry_after
            return ra is not None and ra <= self.max_retry_after
        return False

    def delay(self, attempt: int, exc: BaseException | None, rand: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if isinstance(exc, PrecisProblem) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_retry_after)
        base = min(self.backoff_max, self.backoff_initial * 2 ** max(0, attempt - 1))
        r = random.random() if rand is None else rand
        return base / 2 + base / 2 * r  # "equal jitter": between half and all of the exponential step


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass
class PollSchedule:
    """Delays between polls of a job: short while it makes progress, growing by ``factor`` up to ``maximum``
    while nothing changes, and never shorter than a ``Retry-After`` the server sent."""

    initial: float = 0.5
    factor: float = 1.5
    maximum: float = 5.0
    _current: float = field(default=0.0, init=False)

    def next(self, changed: bool, retry_after: float | None = None) -> float:
        if changed or self._current == 0.0:
            self._current = self.initial
        else:
            self._current = min(self.maximum, self._current * self.factor)
        return max(self._current, retry_after or 0.0)


def progress_key(view: JobView) -> tuple[str, int, int]:
    return (view.status.value, view.progress.chunks_done, view.progress.chunks_total)
