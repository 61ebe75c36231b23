"""Reading a create-summary request: content type, body within the byte limit, validation.

The body is read by hand (not a pydantic body parameter) so the byte limit holds before the body
is buffered and parsed: a declared Content-Length over the limit is refused unread, a streamed
body as soon as it passes the limit (nothing after that chunk is read).

Memory per request is kept to a small multiple of the body: the chunks go straight into one
buffer (no list-then-join copy), pydantic parses that buffer in place, and the text's size check
reuses the body's size instead of encoding the text again (a JSON body is never shorter than the UTF-8
text it carries: every character's JSON form is at least its UTF-8 length)."""

from __future__ import annotations

from fastapi import Request
from pydantic import ValidationError

from common.problems import Problem, invalid_body
from common.schemas import MAX_TEXT_BYTES, SummaryRequest, text_size_problem


def require_json(request: Request) -> None:
    ctype = request.headers.get("content-type", "")
    if not ctype.split(";")[0].strip().lower() == "application/json":
        raise Problem(415, "unsupported-media-type", "Unsupported media type", "send the body as application/json")


def _too_large(detail: str, limit: int) -> Problem:
    return Problem(413, "request-too-large", "Request too large", detail, limit_bytes=limit)


async def read_limited_body(request: Request, limit: int) -> bytearray:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(f"request body is {declared} bytes; the limit is {limit} bytes", limit)
    # One buffer that grows as chunks arrive (not preallocated from Content-Length: a client could
    # then make the gateway hold the limit per connection with headers alone). CPython grows a
    # bytearray geometrically and large blocks are extended by realloc/mremap: the peak stays
    # about the body's size, where a list of chunks joined at the end held it twice.
    buf = bytearray()
    async for chunk in request.stream():
        if len(buf) + len(chunk) > limit:
            raise _too_large(f"request body exceeds the limit of {limit} bytes", limit)
        buf += chunk
    return buf


def validation_problem(exc: ValidationError) -> Problem:
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
    return invalid_body("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)


def parse_summary_request(raw: bytes | bytearray) -> SummaryRequest:
    """The validated request (422 naming each bad field; 413 over the text limit)."""
    try:
        body = SummaryRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_problem(exc) from None
    # The text is no longer than the body, so a body within the text limit needs no count (the
    # count encodes the whole text: another copy of it).
    if len(raw) > MAX_TEXT_BYTES and (p := text_size_problem(body.text)):
        raise p
    return body
