"""gateway/body.py: the body is read into one buffer under the byte limit, refused with 413 as
soon as it passes the limit (the rest is never read), and read + parsed within about twice its
size (the buffer and the parsed text; a list of chunks joined at the end held three times)."""

from __future__ import annotations

import json
import tracemalloc

import pytest
from starlette.requests import Request

from common.problems import Problem
from gateway.body import parse_summary_request, read_limited_body

CHUNK = 65536


def _request(body: bytes, *, declare: bool) -> tuple[Request, list[int]]:
    chunks = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]
    served: list[int] = []

    async def receive():
        i = len(served)
        served.append(i)
        if i < len(chunks):
            return {"type": "http.request", "body": chunks[i], "more_body": i + 1 < len(chunks)}
        return {"type": "http.request", "body": b"", "more_body": False}

    headers = [(b"content-length", str(len(body)).encode())] if declare else []
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive), served


async def test_a_streamed_body_over_the_limit_is_413_without_reading_the_rest():
    body = b"x" * (CHUNK * 40)
    req, served = _request(body, declare=False)
    with pytest.raises(Problem) as exc:
        await read_limited_body(req, CHUNK * 4 + 10)
    assert exc.value.status == 413 and exc.value.extra == {"limit_bytes": CHUNK * 4 + 10}
    assert len(served) == 5, "chunks after the one that crossed the limit were read"


async def test_a_declared_length_over_the_limit_is_413_unread():
    req, served = _request(b"x" * 1000, declare=True)
    with pytest.raises(Problem) as exc:
        await read_limited_body(req, 999)
    assert exc.value.status == 413 and "1000 bytes" in exc.value.detail
    assert served == []


async def test_a_body_is_read_and_parsed_within_about_twice_its_size():
    text = ("All happy families are alike. " * 100_000)[:3_000_000]
    body = json.dumps({"text": text}).encode()
    req, _ = _request(body, declare=True)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        parsed = parse_summary_request(await read_limited_body(req, 20 * 1024 * 1024))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.text == text
    assert peak < 2.3 * len(body), f"peak {peak / len(body):.2f}x the body"
