"""Exceptions raised by the SDK.

Every error response of the API is an RFC 9457 problem document; it is raised as a
:class:`PrecisProblem` subclass chosen by HTTP status (``NotFound`` for 404, ``RateLimited`` for 429, ...)
carrying the document's ``type``, ``title``, ``status``, ``detail`` and its extension members.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from precis_client.models import JobView

_STANDARD_MEMBERS = ("type", "title", "status", "detail", "instance")


class PrecisError(Exception):
    """Base of every exception this SDK raises."""


class ConfigurationError(PrecisError, ValueError):
    """The client is missing configuration (e.g. no API key in arguments or ``PRECIS_API_KEY``)."""


class PrecisTransportError(PrecisError):
    """The API could not be reached (connection refused, reset, timed out) after every retry."""

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class PrecisProblem(PrecisError):
    """An error answer of the API (``application/problem+json``)."""

    def __init__(
        self,
        *,
        status: int,
        type: str = "about:blank",  # the RFC 9457 member name
        title: str = "",
        detail: str = "",
        instance: str | None = None,
        extensions: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.instance = instance
        self.extensions: dict[str, Any] = dict(extensions or {})
        self.headers: dict[str, str] = {k.lower(): v for k, v in (headers or {}).items()}
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")

    @property
    def code(self) -> str:
        """The last segment of ``type``, e.g. ``text-too-long-for-realtime``."""
        return self.type.rstrip("/").rsplit("/", 1)[-1]

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked to wait (``Retry-After``), or None."""
        return parse_retry_after(self.headers.get("retry-after"))

    def __getitem__(self, key: str) -> Any:
        """``problem["limit_tokens"]``: an extension member."""
        return self.extensions[key]

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status, "detail": self.detail}
        if self.instance:
            doc["instance"] = self.instance
        doc.update(self.extensions)
        return doc

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, type={self.type!r}, detail={self.detail!r})"


class ClientProblem(PrecisProblem):
    """A 4xx: the request was refused; sending it again unchanged will not help (except 429)."""


class BadRequest(ClientProblem):
    """400"""


class Unauthorized(ClientProblem):
    """401: missing or unknown API key."""


class Forbidden(ClientProblem):
    """403"""


class NotFound(ClientProblem):
    """404: no job with this id (for this API key)."""


class Conflict(ClientProblem):
    """409: e.g. cancelling a finished job, or an Idempotency-Key reused with a different body."""


class PayloadTooLarge(ClientProblem):
    """413: the body, the text, or (realtime) the token count is over a limit named in the extensions."""


class Gone(ClientProblem):
    """410: the job expired: its document and summary were deleted after the retention period
    (``extensions["expired_at"]``)."""


class UnsupportedMediaType(ClientProblem):
    """415"""


class ValidationProblem(ClientProblem):
    """422: the request body is not valid; ``errors`` lists the fields."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        errs = self.extensions.get("errors")
        return list(errs) if isinstance(errs, list) else []


class RateLimited(ClientProblem):
    """429: over the tenant's rate limit; ``retry_after`` says when to try again."""


class ServerProblem(PrecisProblem):
    """A 5xx: the server or one of its services failed."""


class InternalServerError(ServerProblem):
    """500"""


class ServiceUnavailable(ServerProblem):
    """503: a service is down or overloaded; retried by the client when it sends Retry-After."""


class GatewayTimeout(ServerProblem):
    """504: no summary in time."""


_BY_STATUS: dict[int, type[PrecisProblem]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationProblem,
    429: RateLimited,
    500: InternalServerError,
    503: ServiceUnavailable,
    504: GatewayTimeout,
}


def problem_class(status: int) -> type[PrecisProblem]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 400 <= status < 500:
        return ClientProblem
    if status >= 500:
        return ServerProblem
    return PrecisProblem


def problem_from_response(response: httpx.Response) -> PrecisProblem:
    """The typed exception for an error response; tolerant of bodies that are not problem documents."""
    status = response.status_code
    doc: Any = None
    try:
        doc = json.loads(response.content) if response.content else None
    except ValueError:
        doc = None
    reason = response.reason_phrase or "HTTP error"
    if isinstance(doc, dict):
        ext = {k: v for k, v in doc.items() if k not in _STANDARD_MEMBERS}
        title = _str_member(doc, "title") or reason
        raw_detail = doc.get("detail")
        detail = raw_detail if isinstance(raw_detail, str) else ("" if raw_detail is None else json.dumps(raw_detail))
        type_ = _str_member(doc, "type") or "about:blank"
        instance = _str_member(doc, "instance")
    else:
        ext, title, type_, instance = {}, reason, "about:blank", None
        detail = response.text[:500].strip()
    # The HTTP status is authoritative (a body's "status" member is advisory in RFC 9457).
    return problem_class(status)(
        status=status,
        type=type_,
        title=title,
        detail=detail,
        instance=instance,
        extensions=ext,
        headers=dict(response.headers),
    )


def _str_member(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    return value if isinstance(value, str) and value else None


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from datetime import UTC, datetime

    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class JobUnsuccessful(PrecisError):
    """A job that was waited for ended ``failed`` or ``cancelled``; ``job`` is its final view."""

    def __init__(self, job: JobView) -> None:
        self.job = job
        err = f": {job.error.type}: {job.error.detail}" if job.error else ""
        super().__init__(f"job {job.id} {job.status.value}{err}")


class JobFailed(JobUnsuccessful):
    """The job ended ``failed``."""


class JobCancelled(JobUnsuccessful):
    """The job ended ``cancelled``."""


class WaitTimeout(PrecisError, TimeoutError):
    """``wait()`` gave up before the job finished; ``job`` is the last view seen (the job goes on)."""

    def __init__(self, job_id: str, timeout: float, job: JobView | None) -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.job = job
        state = f" (still {job.status.value})" if job else ""
        super().__init__(f"job {job_id} not finished after {timeout:g} s{state}")
