"""The gateway's hops to realtime_svc and async_svc: one pooled aiohttp session, one call helper,
and how an upstream's answer or failure becomes the gateway's answer."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from fastapi import Response

from common.problems import PROBLEM_JSON, Problem, problem_response
from common.streaming import SSE, sse_event
from gateway.config import GatewaySettings
from gateway.metrics import UPSTREAM_RETRIES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upstream:
    """An internal service's answer, read in full (bodies are small: one summary or one job)."""

    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


class UpstreamStream:
    """An internal service's 200 ``text/event-stream`` answer, relayed as it comes."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers
        self._resp = resp

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive. The stream's time limit (the call's ``timeout_s``) or a
        broken connection ends it with an ``error`` event carrying the problem: the client already
        has its 200, so a problem can no longer be the answer itself."""
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except TimeoutError:
            yield _error_event(504, "upstream-timeout", "Summarization timed out", "the stream ran out of time")
        except aiohttp.ClientError:
            yield _error_event(
                503, "upstream-unavailable", "Service unavailable", "the summary stream broke off; retry"
            )

    async def close(self) -> None:
        # a stream read to its end gives its connection back to the pool; one cut short closes it
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()


def _error_event(status: int, slug: str, title: str, detail: str) -> bytes:
    doc = Problem(status, slug, title, detail).body("/v1/summaries")
    return sse_event("error", json.dumps(doc))


class UpstreamTimeout(Exception):
    pass


class UpstreamDown(Exception):
    pass


class UpstreamClient(Protocol):
    """What the handlers call; :class:`AiohttpUpstream` in the service, an in-process fake in tests."""

    async def call(
        self,
        method: str,
        url: str,
        *,
        timeout_s: float,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        retry_disconnect: bool = False,
    ) -> Upstream: ...

    async def open_stream(
        self, method: str, url: str, *, timeout_s: float, body: bytes, headers: dict[str, str]
    ) -> Upstream | UpstreamStream: ...


def open_session(settings: GatewaySettings) -> aiohttp.ClientSession:
    # aiohttp, not httpx, for the hops to realtime_svc and async_svc: every realtime request
    # pays this hop, and on this project's CPU box an httpx call cost 1.8 ms of client CPU
    # against 0.36 ms for aiohttp (same server, same body: `make bench-http-client`).
    connector = aiohttp.TCPConnector(
        limit=settings.upstream_max_connections, keepalive_timeout=settings.upstream_keepalive_s
    )
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30.0, connect=2.0), auto_decompress=False
    )


class AiohttpUpstream:
    """The gateway's hops over its one pooled aiohttp session (owned by the lifespan)."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def call(
        self,
        method: str,
        url: str,
        *,
        timeout_s: float,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        retry_disconnect: bool = False,
    ) -> Upstream:
        """One call to an internal service. ``retry_disconnect`` (only for calls without side effects,
        like a realtime summary) sends the request once more, on a new connection, when the first
        connection died before any response: a pooled keep-alive connection to a pod that is shutting
        down (a rollout) is closed under the request, and the retry reaches a pod that is ready."""
        hdrs = dict(headers or {})
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        for attempt in (1, 2):
            try:
                async with self.http.request(
                    method, url, data=body, headers=hdrs, timeout=aiohttp.ClientTimeout(total=timeout_s, connect=2.0)
                ) as resp:
                    return Upstream(resp.status, await resp.read(), resp.headers)
            except TimeoutError:  # aiohttp's timeouts are TimeoutError subclasses
                raise UpstreamTimeout(url) from None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                if not retry_disconnect or attempt == 2:
                    raise UpstreamDown(url) from None
                UPSTREAM_RETRIES.inc()
            except aiohttp.ClientError:
                raise UpstreamDown(url) from None
        raise AssertionError("unreachable")

    async def open_stream(
        self, method: str, url: str, *, timeout_s: float, body: bytes, headers: dict[str, str]
    ) -> Upstream | UpstreamStream:
        """A call whose 200 answer is an event stream: that stream, open (the caller closes it),
        or any other answer read in full, as :meth:`call` gives it. ``timeout_s`` bounds the whole
        stream. A connection that died before any response is retried once, as ``call`` does with
        ``retry_disconnect`` (only realtime summaries stream: no side effects)."""
        hdrs = {**headers, "Content-Type": "application/json", "Accept": SSE}
        # Not call()'s loop: call() also re-sends when the connection dies while its body is read,
        # which a stream must not (its first events may already be relayed); here only before the
        # response head.
        for attempt in (1, 2):
            try:
                resp = await self.http.request(
                    method, url, data=body, headers=hdrs, timeout=aiohttp.ClientTimeout(total=timeout_s, connect=2.0)
                )
            except TimeoutError:
                raise UpstreamTimeout(url) from None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                if attempt == 2:
                    raise UpstreamDown(url) from None
                UPSTREAM_RETRIES.inc()
                continue
            except aiohttp.ClientError:
                raise UpstreamDown(url) from None
            if resp.status == 200 and resp.content_type == SSE:
                return UpstreamStream(resp)
            try:
                return Upstream(resp.status, await resp.read(), resp.headers)
            except TimeoutError:
                raise UpstreamTimeout(url) from None
            except aiohttp.ClientError:
                raise UpstreamDown(url) from None
            finally:
                resp.release()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self.http.close()


def encode_body(payload: Any) -> bytes:
    """The JSON body of an internal call: encoded once, so the bytes the gateway's token is
    bound to (common/internal_auth.py) are the bytes sent."""
    return json.dumps(payload, ensure_ascii=False).encode()


def forward(resp: Upstream, instance: str) -> Response:
    """Relay an internal service's error (it is already problem+json), with ``instance`` set to
    the public path the caller asked for: the internal one (``/internal/jobs/<id>``) names a
    route of the private network and is never shown (issue #14 item 9).

    A 401 is the internal service refusing the gateway's own token (a secret that differs
    between the pods, say): relayed as it is, the client would read it as its API key being
    wrong. It becomes a 502 naming no internals, and is logged for the operator."""
    if resp.status == 401:
        log.error(
            "an internal service refused the gateway's token (check PRECIS_INTERNAL_TOKEN_SECRET "
            "is the same for gateway, realtime_svc and async_svc): %s",
            resp.body[:300].decode(errors="replace"),
        )
        return problem_response(
            Problem(502, "upstream-refused", "Bad gateway", "an internal service refused the call; retry later"),
            instance,
        )
    headers = {k: v for k, v in resp.headers.items() if k.lower() in ("retry-after",)}
    media = resp.headers.get("content-type", PROBLEM_JSON)
    body = resp.body
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "instance" in doc:
        doc["instance"] = instance
        body = json.dumps(doc, ensure_ascii=False).encode()
    return Response(body, status_code=resp.status, headers=headers, media_type=media)


def upstream_down(name: str) -> Problem:
    return Problem(
        503,
        "upstream-unavailable",
        "Service unavailable",
        f"the {name} service cannot be reached; retry shortly",
        headers={"Retry-After": "2"},
    )
