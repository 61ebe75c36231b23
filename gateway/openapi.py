"""The gateway's OpenAPI 3.1 document (``GET /openapi.json``, Swagger UI at ``/docs``).

FastAPI builds the skeleton from the routes (paths, parameters, the success models); this module
adds what it cannot know, from declarative tables:

- ``PROBLEM_TYPES``: every problem type an operation can answer (status, title, when, example
  extension members, response headers). docs/problems.md has a section per type.
- ``OPERATIONS``: per operation id (the route function's name, see :func:`operation_id`): tag,
  summary, description, the problem types it really answers, request and response examples, and
  whether it needs the API key.

From them each operation gets one error response per status, ``application/problem+json`` with
the ``Problem`` schema (common/problems.py ``ProblemDetails``) and one named example per problem
type, instead of FastAPI's ``HTTPValidationError`` 422 (the API never answers that shape). The
request body of ``POST /v1/summaries`` (read by hand, gateway/body.py, so FastAPI does not see it)
is the ``SummaryRequest`` schema with its nested models as components: no dangling ``$ref``.

To document a new problem type: add it to ``PROBLEM_TYPES`` and to docs/problems.md, and name it
in the ``errors`` of the operations that answer it (``AUTH`` for everything behind the API key).
A new operation needs an ``OPERATIONS`` entry; tests/unit/test_openapi_document.py fails until
every operation has one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from common.problems import PROBLEM_JSON, ProblemDetails, type_uri
from common.schemas import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    MAX_METADATA_BYTES,
    MAX_SUMMARY_TOKENS,
    MAX_TEXT_BYTES,
    SummaryRequest,
)
from common.streaming import SSE

REF = "#/components/schemas/{model}"
SECURITY_SCHEME = "bearerAuth"
EXAMPLE_JOB_ID = "5c0e8a52-3f5d-4a57-9a43-6f1b0c2d9e71"
EXAMPLE_JOB_PATH = f"/v1/summaries/{EXAMPLE_JOB_ID}"

TAGS = [
    {"name": "summaries", "description": "Create a summary (realtime or as an async job), read and cancel jobs."},
    {"name": "problems", "description": "Documentation of the problem types every error answer names."},
]

# Response headers, by name; a problem type or a success response names the ones it carries.
HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 1},
        "example": 2,
    },
    "WWW-Authenticate": {
        "description": "The authentication scheme the API takes.",
        "schema": {"type": "string"},
        "example": "Bearer",
    },
    "Location": {
        "description": "The job's URL (absolute under PRECIS_PUBLIC_BASE_URL or for a local Host, else relative).",
        "schema": {"type": "string", "format": "uri-reference"},
        "example": f"http://localhost:8080{EXAMPLE_JOB_PATH}",
    },
    # IETF draft-ietf-httpapi-ratelimit-headers, on every authenticated answer (gateway/ratelimit.py)
    "RateLimit-Limit": {
        "description": "The limit closest to exhaustion (requests or body bytes per window).",
        "schema": {"type": "integer", "minimum": 1},
        "example": 600,
    },
    "RateLimit-Remaining": {
        "description": "What is left of that limit in the current window.",
        "schema": {"type": "integer", "minimum": 0},
        "example": 0,
    },
    "RateLimit-Reset": {
        "description": "Seconds until that limit frees up.",
        "schema": {"type": "integer", "minimum": 0},
        "example": 12,
    },
    "RateLimit-Policy": {
        "description": 'Every limit on this tenant: `<limit>;w=<window s>;name="<quota>"`, comma-separated.',
        "schema": {"type": "string"},
        "example": '600;w=60;name="requests", 100000000;w=60;name="bytes"',
    },
    "Idempotent-Replayed": {
        "description": "`true` when this 202 replays the job first created with this Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
}


@dataclass(frozen=True)
class ProblemType:
    """One problem type as the document shows it (docs/problems.md explains it in full)."""

    status: int
    title: str
    when: str  # one line: when this answer comes; goes into the response's description
    detail: str  # the example's detail
    extensions: dict[str, Any] = field(default_factory=dict)  # the example's extension members
    headers: tuple[str, ...] = ()  # names in HEADERS


PROBLEM_TYPES: dict[str, ProblemType] = {
    "unauthorized": ProblemType(
        401,
        "Missing or invalid API key",
        "no `Authorization: Bearer <api key>`, or an unknown key",
        "the API key is not recognised",
        headers=("WWW-Authenticate",),
    ),
    "rate-limited": ProblemType(
        429,
        "Too many requests",
        "the tenant's requests or body bytes per minute are used up, or this client address failed "
        "authentication too often; `limit` names which; retry after `Retry-After` seconds",
        "tenant limit of 600 requests per minute reached; retry in 12 s",
        {"limit": "requests", "limit_value": 600, "limit_unit": "requests", "window_s": 60, "retry_after_s": 12},
        headers=("Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy"),
    ),
    "rate-limit-store-unavailable": ProblemType(
        503,
        "Service unavailable",
        "the store the gateway counts rate limits in is unreachable and the operator chose to refuse "
        "rather than count per replica",
        "the rate-limit store cannot be reached; retry later",
        headers=("Retry-After",),
    ),
    "quota-exceeded": ProblemType(
        429,
        "Tenant quota exceeded",
        "the tenant holds as many unfinished jobs, stored jobs or stored document bytes as its quota "
        "allows; `quota` names which",
        "quota active_jobs is 20 jobs per tenant and this tenant holds 20; wait for a job to finish or cancel one",
        {"quota": "active_jobs", "limit": 20, "current": 20},
        headers=("Retry-After",),
    ),
    "invalid-cursor": ProblemType(
        422,
        "Invalid cursor",
        "`cursor` is not a `next_cursor` this API issued",
        "cursor: not a cursor this API issued; pass back the next_cursor of a previous page unchanged, "
        "or omit it for the first page",
    ),
    "job-expired": ProblemType(
        410,
        "Job expired",
        "the job finished more than the retention period ago: its document and summary were deleted",
        f"job {EXAMPLE_JOB_ID} expired at 2025-02-06T10:02:40+00:00: its document and summary were "
        "deleted after the retention period",
        {"expired_at": "2025-02-06T10:02:40+00:00"},
    ),
    "upstream-refused": ProblemType(
        502,
        "Bad gateway",
        "an internal service refused the gateway's own credentials (a configuration fault, logged)",
        "an internal service refused the call; retry later",
    ),
    "unsupported-media-type": ProblemType(
        415,
        "Unsupported media type",
        "the body is not sent as `application/json`",
        "send the body as application/json",
    ),
    "request-too-large": ProblemType(
        413,
        "Request too large",
        "the request body is over the gateway's byte limit",
        "request body is 30000000 bytes; the limit is 20065536 bytes",
        {"limit_bytes": 2 * MAX_TEXT_BYTES + 65536},
    ),
    "text-too-large": ProblemType(
        413,
        "Text too large",
        f"`text` is over {MAX_TEXT_BYTES:,} UTF-8 bytes",
        f"text is 10000042 bytes; the limit is {MAX_TEXT_BYTES} bytes of UTF-8 text",
        {"limit_bytes": MAX_TEXT_BYTES, "size_bytes": 10_000_042},
    ),
    "text-too-long-for-realtime": ProblemType(
        413,
        "Text too long for realtime",
        "`mode: realtime` for a text over the realtime token limit",
        "text has 2391 tokens; realtime accepts at most 1536 tokens. Send it with mode=async (or mode=auto) instead.",
        {"limit_tokens": 1536, "input_tokens": 2391},
    ),
    "validation-error": ProblemType(
        422,
        "Request body is not valid",
        "the body or a parameter does not match the schema; `errors` names each field",
        "max_summary_tokens: Input should be less than or equal to 512",
        {
            "errors": [
                {
                    "field": "max_summary_tokens",
                    "message": f"Input should be less than or equal to {MAX_SUMMARY_TOKENS}",
                    "type": "less_than_equal",
                }
            ]
        },
    ),
    "invalid-model-input": ProblemType(
        422,
        "Model rejected the input",
        "the summarization model refused this input",
        "unsupported language 'xx'",
    ),
    "not-found": ProblemType(
        404,
        "Not found",
        "no job with this id for this tenant (another tenant's job looks the same)",
        "no summary job with this id",
    ),
    "idempotency-key-reused": ProblemType(
        409,
        "Idempotency-Key reused with a different body",
        "this Idempotency-Key was used for a different request",
        "Idempotency-Key 'my-first-job' was already used for a different request body; use a new key",
    ),
    "job-finished": ProblemType(
        409,
        "Job already finished",
        "the job is already succeeded, failed or cancelled",
        f"job {EXAMPLE_JOB_ID} is already succeeded; only queued or running jobs can be cancelled",
    ),
    "model-error": ProblemType(
        502,
        "Summarization failed",
        "the model failed on this request",
        "the model failed on this request",
    ),
    "model-overloaded": ProblemType(
        503,
        "Summarization model overloaded",
        "realtime is at its in-flight limit or the model's queue is full (`mode: realtime`; a `mode: auto` "
        "text becomes a job instead, 202, unless spill-over is turned off)",
        "more than 64 summaries in flight; retry shortly",
        headers=("Retry-After",),
    ),
    "model-unavailable": ProblemType(
        503,
        "Summarization model unavailable",
        "the model server cannot be reached or has no model loaded",
        "the summarization model cannot take this request now; retry shortly",
        headers=("Retry-After",),
    ),
    "upstream-unavailable": ProblemType(
        503,
        "Service unavailable",
        "the gateway cannot reach the realtime or async service (a submit may have been created: "
        "retry with the same Idempotency-Key)",
        "the async service cannot be reached; retry shortly",
        headers=("Retry-After",),
    ),
    "model-deadline": ProblemType(
        504,
        "Summarization timed out",
        "no summary from the model within the realtime deadline",
        "no summary within the 30 s deadline",
    ),
    "upstream-timeout": ProblemType(
        504,
        "Summarization timed out",
        "no realtime summary within the gateway's timeout",
        "no summary within 35 s",
    ),
    "internal-error": ProblemType(
        500,
        "Internal server error",
        "an unexpected error (logged; the answer says nothing about it)",
        "An unexpected error occurred; it has been logged.",
    ),
}

# What every operation behind the API key can answer before it runs.
AUTH = ("unauthorized", "rate-limited", "rate-limit-store-unavailable", "upstream-refused")
UNEXPECTED = ("internal-error",)

STATUS_DESCRIPTIONS = {
    401: "Unauthorized",
    404: "Not found",
    409: "Conflict",
    410: "Gone",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}

_PARAGRAPH = (
    "The city council voted on Tuesday to extend the bike lane network by 40 kilometres over the next "
    "three years. Officials said cycling has risen by a quarter since 2020."
)
# One example job at two moments: the fields it has from the start, then running and finished.
_JOB_STARTED = {"id": EXAMPLE_JOB_ID, "created_at": "2025-01-07T10:00:00Z", "started_at": "2025-01-07T10:00:01Z"}
_JOB_SUCCEEDED = {
    **_JOB_STARTED,
    "status": "succeeded",
    "progress": {"chunks_done": 15, "chunks_total": 15},
    "finished_at": "2025-01-07T10:02:40Z",
    "summary": "Elizabeth Bennet meets Mr Darcy, whose pride she mistakes for contempt ...",
    "error": None,
    "notifications": [{"channel": "email", "status": "sent", "attempts": 1, "updated_at": "2025-01-07T10:02:41+00:00"}],
    "metadata": {"source": "book-club"},
}
_JOB_RUNNING = {**_JOB_STARTED, "status": "running", "progress": {"chunks_done": 4, "chunks_total": 15}}


@dataclass(frozen=True)
class Operation:
    """What the document says about one operation, beyond what FastAPI reads off the route."""

    tag: str
    summary: str
    description: str
    errors: tuple[str, ...]  # names in PROBLEM_TYPES, the problem types it really answers
    example_path: str  # the ``instance`` of its problem examples
    secured: bool = True  # needs the API key (bearerAuth)
    request_model: type[BaseModel] | None = None  # a body read by hand (FastAPI does not see it)
    request_examples: dict[str, Any] = field(default_factory=dict)  # name -> {summary, value}
    # status -> (description, {example name: {summary, value}}, header names)
    responses: dict[int, tuple[str, dict[str, Any], tuple[str, ...]]] = field(default_factory=dict)
    media_type: str = "application/json"  # of the success responses
    # status -> {media type: media object}: further media types of a success response (the SSE stream)
    extra_content: dict[int, dict[str, Any]] = field(default_factory=dict)


def _sse_event(name: str, data_schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["event", "data"],
        "properties": {
            "event": {"const": name},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data_schema},
        },
    }


# OpenAPI 3.1 (before 3.2's `itemSchema`): a text/event-stream `schema` describes one event, an
# object of the SSE fields (`event`, `data`, `id`, `retry`); `data` holds JSON, given by its
# contentSchema (what schemathesis validates each event of a streamed answer against).
_SSE_EVENT = {
    "description": "One Server-Sent Event of a streamed summary: `token` events, then one `summary` or `error`.",
    "oneOf": [
        _sse_event(
            "token",
            {
                "type": "object",
                "required": ["text"],
                "properties": {"text": {"type": "string", "description": "The text generated since the last event."}},
            },
            "Text as it is generated (the model's raw output).",
        ),
        _sse_event(
            "summary",
            {"$ref": REF.format(model="RealtimeSummary")},
            "The last event: the summary, cleaned, as the unstreamed answer gives it.",
        ),
        _sse_event(
            "error",
            {"$ref": REF.format(model="Problem")},
            "The last event when the summary failed after its first token.",
        ),
    ],
}

_SSE_EXAMPLE = (
    'event: token\r\ndata: {"text": "The"}\r\n\r\n'
    'event: token\r\ndata: {"text": " council"}\r\n\r\n'
    ": more token events\r\n\r\n"
    'event: summary\r\ndata: {"id": "0b8f6a1e-2c55-4f0e-9c1d-7a3e5b2f4d60", "mode": "realtime", '
    '"summary": "The council will extend bike lanes by 40 km over three years.", '
    '"model": "SmolLM2-135M-Instruct", "usage": {"input_tokens": 43, "output_tokens": 15}, '
    '"timings": {"tokenize_ms": 0.21, "ttft_ms": 95.3, "inference_ms": 812.4}}\r\n\r\n'
)

OPERATIONS: dict[str, Operation] = {
    "create_summary": Operation(
        tag="summaries",
        summary="Summarize a text (realtime) or submit it as a job (async)",
        description=(
            "`mode: auto` (the default) sends a text of up to the routing threshold (512 tokens by default) "
            "to realtime and answers **200** with the summary; a longer one becomes an async job, answered "
            "**202** with its id and status URL (`Location`). `mode: realtime` / `mode: async` force a path. "
            "Send an `Idempotency-Key` with async submits: a retry with the same key and body returns the "
            "same job (`Idempotent-Replayed: true`), never a second one.\n\n"
            "**Overload spill-over**: a `mode: auto` text short enough for realtime that realtime cannot "
            "take at once (at its in-flight limit, the model's queue full, or the estimated wait over the "
            "configured bound, 5 s by default) is accepted as an async job instead: the same **202** and "
            "`Location` as any job, with `route_reason: spilled_over` and the `spill_reason`. Realtime "
            "refuses such a request before any generation starts, so it is never summarized twice; a "
            "request realtime has started is never spilled. With an `Idempotency-Key`, a retry of a "
            "spilled request returns the same job (`Idempotent-Replayed: true`), even once realtime has "
            "room again. `mode: realtime` is never spilled: **503** `model-overloaded` with "
            "`Retry-After`, as before.\n\n"
            "**Streaming**: `stream: true`, or `Accept: text/event-stream`, answers **200** "
            "`text/event-stream` (Server-Sent Events) while the summary is generated: `token` events, each "
            '`{"text": ...}` with the text generated since the previous one (the model\'s raw output), '
            "then one `summary` event whose data is the `RealtimeSummary` (the cleaned summary, exactly the "
            "unstreamed one, with `timings.ttft_ms`, the time to the first token). A failure before the "
            "first token is an ordinary problem+json answer (the statuses below); one after it ends the "
            "stream with an `error` event whose data is the `Problem`. A stream is realtime only: "
            "`mode: async` with `stream: true` is a **422**, a `mode: auto` text is served realtime "
            "whatever its length (**413** `text-too-long-for-realtime` over the realtime limit) and is "
            "never spilled over. Closing the connection cancels the generation.\n\n"
            "`?dry_run=true` checks the request exactly as a submit (the same 4xx problems) and answers "
            "**200** with an `Estimate` instead: the route, input tokens, the worker's chunks and model calls, "
            "and an ETA from the workers' recent pace (`eta_s` null, with `eta_basis` saying why, when there "
            "is none). Nothing is stored or queued, the `Idempotency-Key` is ignored and no quota is taken.\n\n"
            f"Limits: `text` ≤ {MAX_TEXT_BYTES:,} UTF-8 bytes, `max_summary_tokens` 1–{MAX_SUMMARY_TOKENS}, "
            f"`metadata` ≤ {MAX_METADATA_BYTES} bytes as JSON; each error names the limit it hit."
        ),
        errors=(
            *AUTH,
            "unsupported-media-type",
            "request-too-large",
            "text-too-large",
            "text-too-long-for-realtime",
            "validation-error",
            "invalid-model-input",
            "idempotency-key-reused",
            "quota-exceeded",
            "model-error",
            "model-overloaded",
            "model-unavailable",
            "upstream-unavailable",
            "model-deadline",
            "upstream-timeout",
            *UNEXPECTED,
        ),
        extra_content={
            200: {
                SSE: {
                    "schema": _SSE_EVENT,
                    "examples": {
                        "stream": {
                            "summary": "A streamed realtime summary (`stream: true`)",
                            "value": _SSE_EXAMPLE,
                        }
                    },
                }
            }
        },
        example_path="/v1/summaries",
        request_model=SummaryRequest,
        request_examples={
            "realtime": {"summary": "A paragraph, summarized at once", "value": {"text": _PARAGRAPH}},
            "stream": {
                "summary": "A paragraph, streamed as Server-Sent Events",
                "value": {"text": _PARAGRAPH, "stream": True},
            },
            "async": {
                "summary": "A long document as a job, with an email when it is done",
                "value": {
                    "text": "It is a truth universally acknowledged, that a single man in possession of a good "
                    "fortune, must be in want of a wife. ...",
                    "mode": "async",
                    "max_summary_tokens": 256,
                    "language": "en",
                    "notify": {"email": "me@example.com"},
                    "metadata": {"source": "book-club"},
                },
            },
        },
        responses={
            200: (
                "The realtime summary (not stored: `id` is a request id for the logs); with "
                "`dry_run=true`, the `Estimate` (`dry_run: true`) of either path.",
                {
                    "realtime": {
                        "summary": "A realtime summary",
                        "value": {
                            "id": "0b8f6a1e-2c55-4f0e-9c1d-7a3e5b2f4d60",
                            "mode": "realtime",
                            "summary": "The council will extend bike lanes by 40 km over three years.",
                            "model": "SmolLM2-135M-Instruct",
                            "usage": {"input_tokens": 43, "output_tokens": 15},
                            "timings": {"tokenize_ms": 0.21, "inference_ms": 812.4},
                        },
                    },
                    "estimate": {
                        "summary": "A dry run of a long document (dry_run=true)",
                        "value": {
                            "dry_run": True,
                            "mode": "async",
                            "input_tokens": 10894,
                            "chunks": 15,
                            "model_calls": 19,
                            "reduce_levels": 2,
                            "queue_ahead_calls": 40,
                            "eta_s": 89.3,
                            "eta_basis": "(40 model calls queued ahead + 19 of this job) / 0.661 calls/s, the "
                            "workers' pace while busy over the 12 jobs that succeeded in the last 3600 s; fair "
                            "sharing between tenants can finish it sooner, retries later",
                            "throughput": {
                                "window_s": 3600,
                                "jobs": 12,
                                "model_calls": 204,
                                "busy_s": 308.6,
                                "model_calls_per_s": 0.661,
                            },
                        },
                    },
                    "estimate-no-data": {
                        "summary": "A dry run with no recent job to estimate the ETA from",
                        "value": {
                            "dry_run": True,
                            "mode": "async",
                            "input_tokens": 2391,
                            "chunks": 4,
                            "model_calls": 5,
                            "reduce_levels": 1,
                            "queue_ahead_calls": None,
                            "eta_s": None,
                            "eta_basis": "no job succeeded in the last 3600 s: no recent pace to estimate from",
                            "throughput": {
                                "window_s": 3600,
                                "jobs": 0,
                                "model_calls": 0,
                                "busy_s": 0.0,
                                "model_calls_per_s": None,
                            },
                        },
                    },
                },
                (),
            ),
            202: (
                "The job was accepted (or replayed, for a repeated Idempotency-Key); poll its `status_url`. "
                "`route_reason` says why it became a job; `spill_reason`, set when it was spilled over "
                "from a busy realtime path, says what was busy.",
                {
                    "async": {
                        "summary": "An accepted job",
                        "value": {
                            "id": EXAMPLE_JOB_ID,
                            "mode": "async",
                            "status": "queued",
                            "status_url": f"http://localhost:8080{EXAMPLE_JOB_PATH}",
                            "route_reason": "threshold",
                            "spill_reason": None,
                        },
                    },
                    "spilled": {
                        "summary": "A short mode=auto text spilled over to a job: realtime was at capacity",
                        "value": {
                            "id": EXAMPLE_JOB_ID,
                            "mode": "async",
                            "status": "queued",
                            "status_url": f"http://localhost:8080{EXAMPLE_JOB_PATH}",
                            "route_reason": "spilled_over",
                            "spill_reason": "realtime_at_capacity",
                        },
                    },
                },
                ("Location", "Idempotent-Replayed"),
            ),
        },
    ),
    "list_summaries": Operation(
        tag="summaries",
        summary="List the caller's summary jobs, newest first, a page at a time",
        description=(
            "Only the caller's tenant's async jobs. Follow `next_cursor` (opaque; `null` on the last page) "
            "for older jobs: pages stay stable while new jobs are added (keyset pagination). Filter by "
            f"`status` and `created_after`; `limit` 1–{MAX_LIST_LIMIT} ({DEFAULT_LIST_LIMIT} by default). "
            "Expired jobs are listed as "
            "tombstones (`expired_at` set, no summary)."
        ),
        errors=(*AUTH, "validation-error", "invalid-cursor", "upstream-unavailable", *UNEXPECTED),
        example_path="/v1/summaries",
        responses={
            200: (
                "One page of jobs.",
                {
                    "page": {
                        "summary": "A page with more to follow",
                        "value": {
                            "items": [{**_JOB_RUNNING, "id": "9d2b7c1e-6a4f-4c3b-8e5d-2f1a0b9c8d7e"}, _JOB_SUCCEEDED],
                            "next_cursor": "eyJ2IjoxLCJjIjoiMjAyNS0wMS0wN1QxMDowMDowMCswMDowMCJ9",
                        },
                    },
                    "last": {"summary": "The last page", "value": {"items": [], "next_cursor": None}},
                },
                (),
            )
        },
    ),
    "get_summary": Operation(
        tag="summaries",
        summary="Read a summary job: status, progress, and its summary once succeeded",
        description=(
            "Poll until `status` is terminal (`succeeded`, `failed`, `cancelled`). `progress` counts the "
            "document's chunks. Another tenant's job is the same 404 as an unknown id."
        ),
        errors=(*AUTH, "not-found", "job-expired", "upstream-unavailable", *UNEXPECTED),
        example_path=EXAMPLE_JOB_PATH,
        responses={
            200: (
                "The job.",
                {
                    "running": {"summary": "A running job", "value": _JOB_RUNNING},
                    "succeeded": {"summary": "A succeeded job", "value": _JOB_SUCCEEDED},
                },
                (),
            )
        },
    ),
    "cancel_summary": Operation(
        tag="summaries",
        summary="Cancel a summary job",
        description=(
            "A queued job is `cancelled` at once; a running one becomes `cancelling` and the worker stops "
            "between chunks. A finished job is 409."
        ),
        errors=(*AUTH, "not-found", "job-finished", "upstream-unavailable", *UNEXPECTED),
        example_path=EXAMPLE_JOB_PATH,
        responses={
            200: (
                "The job after the cancel.",
                {
                    "cancelling": {
                        "summary": "A running job being cancelled",
                        "value": {**_JOB_RUNNING, "status": "cancelling"},
                    }
                },
                (),
            )
        },
    ),
    "list_problem_types": Operation(
        tag="problems",
        summary="The problem types, documented (docs/problems.md)",
        description=(
            "HTML, or the Markdown source for `Accept: text/markdown`. Each type's section has the id "
            "of its name (`/problems#not-found`)."
        ),
        errors=UNEXPECTED,
        example_path="/problems",
        secured=False,
        responses={200: ("The page.", {}, ())},
        media_type="text/html",
    ),
    "get_problem_type": Operation(
        tag="problems",
        summary="One problem type, documented: where a problem's `type` leads",
        description="HTML, or the Markdown source for `Accept: text/markdown`.",
        errors=("not-found", *UNEXPECTED),
        example_path="/problems/no-such-type",
        secured=False,
        responses={200: ("The problem type's section.", {}, ())},
        media_type="text/html",
    ),
}


def operation_id(route: APIRoute) -> str:
    """Operation ids are the route functions' names (``create_summary``): what a generated client
    names its methods, and the keys of ``OPERATIONS``."""
    return route.name


def problem_example(name: str, instance: str) -> dict[str, Any]:
    """The body a problem of this type has (common/problems.py ``Problem.body``)."""
    p = PROBLEM_TYPES[name]
    return {
        "type": type_uri(name),
        "title": p.title,
        "status": p.status,
        "detail": p.detail,
        "instance": instance,
        **p.extensions,
    }


def error_responses(names: Iterable[str], instance: str) -> dict[str, Any]:
    """One response per status, its problem types as named examples, the union of their headers."""
    by_status: dict[int, list[str]] = {}
    for name in names:
        by_status.setdefault(PROBLEM_TYPES[name].status, []).append(name)
    out: dict[str, Any] = {}
    for status in sorted(by_status):
        types = by_status[status]
        lines = "\n".join(f"- [`{n}`]({type_uri(n)}): {PROBLEM_TYPES[n].when}" for n in types)
        resp: dict[str, Any] = {
            "description": f"{STATUS_DESCRIPTIONS.get(status, 'Error')}.\n\n{lines}",
            "content": {
                PROBLEM_JSON: {
                    "schema": {"$ref": REF.format(model="Problem")},
                    "examples": {
                        n: {"summary": PROBLEM_TYPES[n].title, "value": problem_example(n, instance)} for n in types
                    },
                }
            },
        }
        header_names = sorted({h for n in types for h in PROBLEM_TYPES[n].headers})
        if header_names:
            resp["headers"] = {h: HEADERS[h] for h in header_names}
        out[str(status)] = resp
    return out


def _model_components(models: Iterable[type[BaseModel]]) -> dict[str, Any]:
    """JSON Schemas of ``models`` and of every model they nest, as components (pydantic's
    ``$defs`` become siblings, so every ``$ref`` resolves)."""
    _, defs = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    return dict(defs.get("$defs", {}))


def _document(op: dict[str, Any], spec: Operation) -> None:
    op["tags"] = [spec.tag]
    op["summary"] = spec.summary
    op["description"] = spec.description
    # The API key is the security scheme, not a header parameter (tenant_of reads the header).
    params = [p for p in op.get("parameters", []) if not (p["in"] == "header" and p["name"].lower() == "authorization")]
    for p in params:
        if p["in"] == "header" and p["name"] == "Idempotency-Key":
            p["description"] = (
                "Makes an async submit safe to retry: the same key and body return the first job "
                "(per tenant). At most 255 characters."
            )
            p["example"] = "my-first-job"
        if p["in"] == "path" and p["name"] == "job_id":
            p["description"] = "The job's id (the `id` of its 202)."
            p["schema"] = {"type": "string", "format": "uuid", "title": "Job Id"}
            p["example"] = EXAMPLE_JOB_ID
    if params:
        op["parameters"] = params
    else:
        op.pop("parameters", None)
    if spec.secured:
        op["security"] = [{SECURITY_SCHEME: []}]
    else:
        op["security"] = []
    if spec.request_model is not None:
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": REF.format(model=spec.request_model.__name__)},
                    "examples": spec.request_examples,
                }
            },
        }
    responses = {code: r for code, r in op.get("responses", {}).items() if not code.startswith(("4", "5"))}
    for status, (description, examples, headers) in spec.responses.items():
        resp = responses.setdefault(str(status), {})
        resp["description"] = description
        content = resp.setdefault("content", {})
        if spec.media_type != "application/json":
            content.clear()
            content[spec.media_type] = {"schema": {"type": "string"}}
            if spec.media_type == "text/html":
                content["text/markdown"] = {"schema": {"type": "string"}}
        elif examples:
            media = content.setdefault("application/json", {})
            media["examples"] = examples
            # A response of several models (create_summary's 200: RealtimeSummary or Estimate) is
            # exactly one of them (their required fields differ): oneOf, not FastAPI's anyOf.
            schema = media.get("schema", {})
            if "anyOf" in schema and all("$ref" in b for b in schema["anyOf"]):
                schema["oneOf"] = schema.pop("anyOf")
        if headers:
            resp["headers"] = {h: HEADERS[h] for h in headers}
    for status, media in spec.extra_content.items():
        responses.setdefault(str(status), {}).setdefault("content", {}).update(media)
    responses.update(error_responses(spec.errors, spec.example_path))
    op["responses"] = responses


def build_openapi(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version="3.1.0",
        summary="Summaries of short texts at once (realtime) and of long documents as jobs (async).",
        description=(
            "Every request to `/v1` needs `Authorization: Bearer <api key>`. Every error is "
            "`application/problem+json` (RFC 9457, the `Problem` schema) whose `type` leads to its "
            "documentation under [`/problems`](/problems)."
        ),
        routes=app.routes,
        tags=TAGS,
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    # The API never answers FastAPI's validation shape: its 422 is a Problem.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    models = _model_components([SummaryRequest, ProblemDetails])
    models["Problem"] = models.pop(ProblemDetails.__name__)
    for name, schema in models.items():
        schemas.setdefault(name, schema)
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key, issued by the operator (`precis-dev-key` under `make run`).",
        }
    }
    for path, item in doc.get("paths", {}).items():
        for op in item.values():
            # tests/unit/test_openapi_document.py fails until every operation has its entry; until
            # then a new one still gets Problem errors (FastAPI's 422 would now be a dangling $ref)
            _document(op, OPERATIONS.get(op["operationId"]) or _undocumented(path))
    return doc


def _undocumented(path: str) -> Operation:
    secured = path.startswith("/v1/")
    errors = (*AUTH, "validation-error", *UNEXPECTED) if secured else ("validation-error", *UNEXPECTED)
    return Operation(
        tag="summaries",
        summary="(not yet documented)",
        description="",
        errors=errors,
        example_path=path,
        secured=secured,
    )


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`build_openapi`'s document at ``/openapi.json`` (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
