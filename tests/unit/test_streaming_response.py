"""common/streaming.py: a streamed answer's ``on_close`` runs however the answer ends, also when
its body generator never started (what a plain ``finally`` in the generator cannot do)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.requests import ClientDisconnect

from common.streaming import ClosingStreamingResponse, sse_event

SCOPE = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "POST", "path": "/", "headers": []}


def response(log: list[str]) -> ClosingStreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        log.append("started")
        try:
            yield sse_event("token", '{"text": "a"}')
            yield sse_event("summary", "{}")
        finally:
            log.append("generator finally")

    async def closed() -> None:
        log.append("on_close")

    r = ClosingStreamingResponse(body(), media_type="text/event-stream")
    r.on_close = closed
    return r


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def test_on_close_after_a_complete_answer() -> None:
    log: list[str] = []
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await response(log)(SCOPE, receive, send)
    assert log == ["started", "generator finally", "on_close"]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert body == b'event: token\ndata: {"text": "a"}\n\nevent: summary\ndata: {}\n\n'


async def test_on_close_when_the_client_is_gone_before_the_first_byte() -> None:
    """The start message fails (the connection is closed): Starlette never iterates the body, so
    its generator's ``finally`` never runs, and only ``on_close`` can give back what it held."""
    log: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        raise OSError("connection closed")

    with pytest.raises(ClientDisconnect):  # Starlette's form of the OSError
        await response(log)(SCOPE, receive, send)
    assert log == ["on_close"]
