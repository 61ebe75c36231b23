"""Streamed HTTP answers that always clean up (realtime_svc's Server-Sent Events, the gateway's
relay of them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import StreamingResponse


class ClosingMixin:
    """A streaming response whose ``on_close`` is awaited however the response ends: the body
    iterated to its end, the client gone mid-stream, or the client gone before the first byte.
    In that last case Starlette (and sse-starlette) never start the body's generator, and a
    generator that never started runs no ``finally``: what it holds (a place among the requests in
    flight, an upstream stream) would leak. Set ``on_close`` after construction."""

    on_close: Callable[[], Awaitable[None]] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        finally:
            if self.on_close is not None:
                await self.on_close()


class ClosingStreamingResponse(ClosingMixin, StreamingResponse):
    pass


SSE = "text/event-stream"
# what every event stream answers with: no caching, and no buffering by a proxy (nginx's header),
# so each event leaves as soon as it is written
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_event(event: str, data: str) -> bytes:
    """One Server-Sent Event, for a stream the gateway writes itself (a relay's own error event):
    ``data`` is one line of JSON here, so one ``data:`` field."""
    return f"event: {event}\ndata: {data}\n\n".encode()
