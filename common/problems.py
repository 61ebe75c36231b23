"""RFC 9457 problem+json errors shared by every FastAPI service.

Every 4xx/5xx leaves as ``application/problem+json`` with a stable ``type``; unexpected exceptions
are logged server-side and answered with a generic 500 (no stack trace leaks).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# Where each problem type is documented: docs/problems.md, one section per type, served by the
# gateway at ``/problems/<type>`` (and the whole page at ``/problems``). The URI is a relative
# reference (RFC 9457 section 3.1.1 allows it; it resolves against the URL that answered): every
# answer reaches the client through the gateway, so it resolves to that gateway's page in any
# deployment, and the identifier is the same string everywhere, which a client can compare.
# (It was ``https://precis.dev/problems/<type>``, a host nobody serves.)
PROBLEMS_PATH = "/problems"
TYPE_BASE = PROBLEMS_PATH + "/"


def type_uri(slug: str) -> str:
    """The ``type`` member of a problem of this type (``/problems/<slug>``)."""
    return TYPE_BASE + slug


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        type_: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.type = type_
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": type_uri(self.type),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            doc["instance"] = instance
        doc.update(self.extra)
        return doc


class FieldError(BaseModel):
    """One invalid field of a ``validation-error`` problem."""

    field: str = Field(
        description="Dotted path of the field (``text``, ``notify.webhook_url``, ``header.Idempotency-Key``)."
    )
    message: str = Field(description="What is wrong with it, naming the limit where there is one.")
    type: str = Field(description="Machine-readable kind of the error (pydantic's error type, e.g. ``string_type``).")


class ProblemDetails(BaseModel):
    """The body of every 4xx/5xx answer (RFC 9457 problem details), as the OpenAPI ``Problem``
    schema: the five standard members plus the extension members the services really set (each
    only on the problem types that name it, see docs/problems.md). Other members may appear."""

    model_config = ConfigDict(title="Problem", extra="allow")

    type: str = Field(
        description="URI reference of the problem type; resolves (against the API's URL) to its documentation.",
        json_schema_extra={"format": "uri-reference"},
        examples=["/problems/not-found"],
    )
    title: str = Field(description="Short summary of the problem type; the same for every problem of that type.")
    status: int = Field(ge=100, le=599, description="The HTTP status code of this answer.")
    detail: str = Field(description="What went wrong with this request, naming the limit that was hit.")
    instance: str | None = Field(default=None, description="The path of the request that got this answer.")
    errors: list[FieldError] | None = Field(default=None, description="``validation-error``: each invalid field.")
    limit_bytes: int | None = Field(default=None, description="``request-too-large``, ``text-too-large``: the limit.")
    size_bytes: int | None = Field(default=None, description="``text-too-large``: the text's size in UTF-8 bytes.")
    limit_tokens: int | None = Field(default=None, description="``text-too-long-for-realtime``: the token limit.")
    input_tokens: int | None = Field(default=None, description="``text-too-long-for-realtime``: the text's tokens.")
    # limit_per_minute went with the token bucket; these are what gateway/ratelimit.py and
    # async_svc/intake.py set. `limit` is the quota's name for rate-limited, its size for quota-exceeded.
    limit: str | int | None = Field(
        default=None,
        description="``rate-limited``: which limit (requests, bytes, failed-auth); ``quota-exceeded``: the quota.",
    )
    limit_value: int | None = Field(default=None, description="``rate-limited``: the limit per window.")
    limit_unit: str | None = Field(default=None, description="``rate-limited``: what the limit counts.")
    window_s: int | None = Field(default=None, description="``rate-limited``: the window in seconds.")
    retry_after_s: int | None = Field(default=None, description="``rate-limited``: seconds until it frees up.")
    quota: str | None = Field(default=None, description="``quota-exceeded``: which quota (active_jobs, ...).")
    current: int | None = Field(default=None, description="``quota-exceeded``: what the tenant holds now.")
    expired_at: str | None = Field(default=None, description="``job-expired``: when the job expired (ISO 8601).")


def invalid_body(detail: str, **extra: Any) -> Problem:
    """422 ``validation-error``: a body that parsed but is not acceptable (blank text, a field the
    chosen mode does not take); the same type and title as the schema-validation answers."""
    return Problem(422, "validation-error", "Request body is not valid", detail, **extra)


def problem_response(p: Problem, instance: str | None = None) -> JSONResponse:
    return JSONResponse(p.body(instance), status_code=p.status, headers=p.headers, media_type=PROBLEM_JSON)


_STATUS_TYPES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Missing or invalid API key"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "Request body is not valid"),
    429: ("rate-limited", "Too many requests"),
    503: ("unavailable", "Service unavailable"),
}


def _loc(err: dict[str, Any]) -> str:
    return ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _loc(e), "message": str(e.get("msg", "")), "type": e.get("type", "")} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
        p = Problem(422, "validation-error", "Request body is not valid", detail, errors=errors)
        return problem_response(p, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_, title = _STATUS_TYPES.get(exc.status_code, ("http-error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        p = Problem(exc.status_code, type_, title, detail, headers=dict(exc.headers or {}))
        return problem_response(p, request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        p = Problem(500, "internal-error", "Internal server error", "An unexpected error occurred; it has been logged.")
        return problem_response(p, request.url.path)
