"""Problem documents become typed exceptions; Retry-After parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from precis_client import (
    ClientProblem,
    Conflict,
    GatewayTimeout,
    NotFound,
    PayloadTooLarge,
    PrecisProblem,
    RateLimited,
    ServerProblem,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    ValidationProblem,
)
from precis_client.errors import parse_retry_after, problem_class, problem_from_response

PROBLEM = "application/problem+json"


def problem_response(status: int, doc: dict, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=doc, headers={"content-type": PROBLEM, **(headers or {})})


def test_413_carries_the_standard_members_and_its_extensions() -> None:
    doc = {
        "type": "https://precis.dev/problems/text-too-long-for-realtime",
        "title": "Text too long for realtime",
        "status": 413,
        "detail": "text has 2391 tokens; realtime accepts at most 1536 tokens.",
        "instance": "/v1/summaries",
        "limit_tokens": 1536,
        "input_tokens": 2391,
    }
    p = problem_from_response(problem_response(413, doc))
    assert type(p) is PayloadTooLarge and isinstance(p, ClientProblem) and isinstance(p, PrecisProblem)
    assert (p.status, p.type, p.title, p.detail, p.instance) == (
        413,
        doc["type"],
        doc["title"],
        doc["detail"],
        "/v1/summaries",
    )
    assert p.extensions == {"limit_tokens": 1536, "input_tokens": 2391}
    assert p["limit_tokens"] == 1536
    assert p.code == "text-too-long-for-realtime"
    assert p.to_dict() == doc
    assert "413" in str(p) and "2391 tokens" in str(p)


def test_422_exposes_its_field_errors() -> None:
    errors = [{"field": "max_summary_tokens", "message": "Input should be less than or equal to 512", "type": "x"}]
    doc = {"type": "t/validation-error", "title": "Request body is not valid", "status": 422, "detail": "d"}
    p = problem_from_response(problem_response(422, {**doc, "errors": errors}))
    assert isinstance(p, ValidationProblem)
    assert p.errors == errors


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, Unauthorized),
        (404, NotFound),
        (409, Conflict),
        (413, PayloadTooLarge),
        (415, UnsupportedMediaType),
        (422, ValidationProblem),
        (429, RateLimited),
        (503, ServiceUnavailable),
        (504, GatewayTimeout),
        (418, ClientProblem),
        (502, ServerProblem),
    ],
)
def test_status_selects_the_exception_class(status: int, cls: type[PrecisProblem]) -> None:
    assert problem_class(status) is cls
    p = problem_from_response(problem_response(status, {"type": "t", "title": "T", "status": status, "detail": "d"}))
    assert type(p) is cls and p.status == status


def test_http_status_wins_over_the_bodys_status_member() -> None:
    p = problem_from_response(problem_response(404, {"type": "t", "title": "T", "status": 500, "detail": "d"}))
    assert isinstance(p, NotFound) and p.status == 404
    assert "status" not in p.extensions


def test_a_body_that_is_not_a_problem_document_still_gives_a_typed_error() -> None:
    r = httpx.Response(502, text="<html>bad gateway</html>", headers={"content-type": "text/html"})
    p = problem_from_response(r)
    assert type(p) is ServerProblem
    assert p.status == 502 and p.type == "about:blank" and p.title == "Bad Gateway"
    assert p.detail == "<html>bad gateway</html>" and p.extensions == {}


def test_retry_after_header_is_read_from_the_response() -> None:
    r = problem_response(429, {"type": "t", "title": "T", "status": 429, "detail": "d"}, {"Retry-After": "3"})
    p = problem_from_response(r)
    assert isinstance(p, RateLimited) and p.retry_after == 3.0


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("soon") is None
    future = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (parse_retry_after(future) or 0) <= 30
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past) == 0.0
