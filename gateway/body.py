"""Reading a create-summary request: content type, body within the byte limit, validation.

The body is read by hand (not a pydantic body parameter) so the byte limit holds before the body
is buffered and parsed: a declared Content-Length over the limit is refused unread, a streamed
body as soon as it passes the limit."""

from __future__ import annotations

from fastapi import Request
from pydantic import ValidationError

from common.problems import Problem, invalid_body
from common.schemas import SummaryRequest, text_size_problem


def require_json(request: Request) -> None:
    ctype = request.headers.get("content-type", "")
    if not ctype.split(";")[0].strip().lower() == "application/json":
        raise Problem(415, "unsupported-media-type", "Unsupported media type", "send the body as application/json")


def _too_large(detail: str, limit: int) -> Problem:
    return Problem(413, "request-too-large", "Request too large", detail, limit_bytes=limit)


async def read_limited_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(f"request body is {declared} bytes; the limit is {limit} bytes", limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(f"request body exceeds the limit of {limit} bytes", limit)
        chunks.append(chunk)
    return b"".join(chunks)


def validation_problem(exc: ValidationError) -> Problem:
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
    return invalid_body("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)


def parse_summary_request(raw: bytes) -> SummaryRequest:
    """The validated request (422 naming each bad field; 413 over the text limit)."""
    try:
        body = SummaryRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_problem(exc) from None
    if p := text_size_problem(body.text):
        raise p
    return body
