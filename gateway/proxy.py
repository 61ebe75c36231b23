"""The two proxies behind ``/v1/summaries``: a realtime summary (relayed as it is) and an async job
(answered 202 with its status URL), plus the job reads and cancels."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from common.internal_auth import bearer, body_digest_async, sign
from common.problems import Problem, invalid_body
from common.schemas import (
    DEFAULT_REALTIME_SUMMARY_TOKENS,
    MAX_WAIT_HEADER,
    REFUSED_BEFORE_START_HEADER,
    AsyncAccepted,
    SpillReason,
    SummaryRequest,
)
from common.streaming import SSE, SSE_HEADERS, ClosingStreamingResponse
from gateway.deps import State
from gateway.routing import Route
from gateway.upstream import Upstream, UpstreamDown, UpstreamTimeout, encode_body, forward, upstream_down

# Hosts the request's own base URL may be echoed for when PRECIS_PUBLIC_BASE_URL is unset: the
# loopback names of `make run` and the local tests (a link there can only lead a client back to
# its own machine). Any other Host header is client-controlled (issue #14 item 5) and never echoed.
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def status_url(state: State, request: Request, job_id: str) -> str:
    """The job's URL for Location and status_url: under PRECIS_PUBLIC_BASE_URL when set; else
    absolute only for a loopback Host, relative (``/v1/summaries/<id>``) for any other."""
    path = f"/v1/summaries/{job_id}"
    base = state.settings.public_base_url
    if not base and (request.base_url.hostname or "").lower() in _LOOPBACK_HOSTS:
        base = str(request.base_url)
    return f"{base.rstrip('/')}{path}" if base else path


async def signed(
    state: State,
    audience: str,
    method: str,
    url: str,
    tenant: str,
    body: bytes = b"",
    idempotency_key: str | None = None,
) -> dict[str, str]:
    """The headers of one internal call: the gateway's token for exactly this request (tenant,
    service, method, path, body, Idempotency-Key; common/internal_auth.py), and the key. A large
    body is hashed off the event loop (body_digest_async)."""
    idempotency_key = idempotency_key or None  # the header goes only when set: sign what is sent
    token = sign(
        state.internal_key,
        tenant=tenant,
        audience=audience,
        method=method,
        path=urlsplit(url).path,
        digest=await body_digest_async(body),
        idempotency_key=idempotency_key,
        ttl_s=state.settings.internal_token_ttl_s,
    )
    headers = bearer(token)
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def check_realtime(body: SummaryRequest) -> None:
    """The gateway's own check of a realtime request (422); realtime_svc checks the tokens."""
    if body.notify is not None:
        raise invalid_body("notify: only async summaries send notifications")


class RealtimeRefused(Exception):
    """realtime_svc refused the request before any generation started (a 503 naming its reason
    in ``Precis-Refused-Before-Start``): the request may become an async job without the work
    being done twice. Raised only for a call that allowed it (``max_wait_s`` given)."""

    def __init__(self, reason: SpillReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


def _refused_before_start(resp: Upstream) -> SpillReason | None:
    if resp.status != 503:
        return None
    try:
        return SpillReason(resp.headers.get(REFUSED_BEFORE_START_HEADER, ""))
    except ValueError:  # absent, or a reason this gateway does not know: not spilled
        return None


def _realtime_payload(body: SummaryRequest, rid: str) -> dict[str, Any]:
    return {
        "text": body.text,
        "max_summary_tokens": body.max_summary_tokens or DEFAULT_REALTIME_SUMMARY_TOKENS,
        "language": body.language,
        "request_id": rid,
    }


def _unreached(timeout_s: float, exc: Exception) -> Problem:
    """A realtime call that got no answer: 504 past its time limit, else 503."""
    if isinstance(exc, UpstreamTimeout):
        return Problem(504, "upstream-timeout", "Summarization timed out", f"no summary within {timeout_s:g} s")
    return upstream_down("realtime")


async def to_realtime_stream(state: State, body: SummaryRequest, tenant: str) -> Response:
    """A streamed realtime summary (``stream: true``): realtime_svc's Server-Sent Events relayed
    byte for byte as they arrive, or its answer before the stream (a problem) as ``to_realtime``
    relays it. No spill-over: a stream cannot become a job. A client that goes away closes the
    upstream stream, which cancels the generation (realtime_svc/routers/summarize.py)."""
    s = state.settings
    check_realtime(body)
    url = f"{s.realtime_url}/internal/summarize"
    data = encode_body({**_realtime_payload(body, str(uuid.uuid4())), "stream": True})
    try:
        resp = await state.upstream.open_stream(
            "POST",
            url,
            body=data,
            headers=await signed(state, "realtime_svc", "POST", url, tenant, data),
            timeout_s=s.realtime_timeout_s,
        )
    except (UpstreamTimeout, UpstreamDown) as exc:
        raise _unreached(s.realtime_timeout_s, exc) from None
    if isinstance(resp, Upstream):
        if resp.status == 200:  # realtime_svc answered a stream request without a stream
            raise Problem(502, "model-error", "Summarization failed", "the realtime service did not stream")
        return forward(resp, "/v1/summaries")
    out = ClosingStreamingResponse(resp.chunks(), media_type=SSE, headers=SSE_HEADERS)
    out.on_close = resp.close
    return out


async def to_realtime(state: State, body: SummaryRequest, tenant: str, *, max_wait_s: float | None = None) -> Response:
    """The realtime summary, or realtime_svc's error relayed. ``max_wait_s`` (mode=auto with
    spill-over on): realtime_svc refuses instead of queueing past this estimated wait, and any
    refusal before the start raises :class:`RealtimeRefused` instead of answering 503. Anything
    else (a timeout, a model error, a dead connection) is answered as always: the work may have
    started, so it is never also queued as a job."""
    s = state.settings
    check_realtime(body)
    rid = str(uuid.uuid4())
    url = f"{s.realtime_url}/internal/summarize"
    data = encode_body(_realtime_payload(body, rid))
    headers = await signed(state, "realtime_svc", "POST", url, tenant, data)
    if max_wait_s is not None:
        headers[MAX_WAIT_HEADER] = str(round(max_wait_s * 1000))
    try:
        resp = await state.upstream.call(
            "POST",
            url,
            body=data,
            headers=headers,
            timeout_s=s.realtime_timeout_s,
            retry_disconnect=True,
        )
    except (UpstreamTimeout, UpstreamDown) as exc:
        raise _unreached(s.realtime_timeout_s, exc) from None
    if resp.status != 200:
        if max_wait_s is not None and (reason := _refused_before_start(resp)) is not None:
            raise RealtimeRefused(reason)
        return forward(resp, "/v1/summaries")
    # realtime_svc's body is already the public RealtimeSummary: relay the bytes as they are
    return Response(resp.body, status_code=200, media_type="application/json")


async def to_async(
    state: State,
    request: Request,
    body: SummaryRequest,
    tenant: str,
    idempotency_key: str | None,
    route: Route,
    spill_reason: SpillReason | None = None,
) -> Response:
    """The job's 202. A spilled request sends async_svc exactly what an async submit of the same
    body sends (so a retry with its Idempotency-Key replays the same job, whichever way it came),
    and its 202 says why (``route_reason``, ``spill_reason``)."""
    s = state.settings
    reason = route.reason
    if reason == "stream":  # a stream never becomes a job (routing.choose_mode)
        raise AssertionError("a streamed request routed to async")
    payload = {
        "text": body.text,
        "max_summary_tokens": body.max_summary_tokens,
        "language": body.language,
        "notify": body.notify.model_dump(mode="json", exclude_none=True) if body.notify else None,
        "metadata": body.metadata,
    }
    url = f"{s.async_url}/internal/jobs"
    data = encode_body(payload)
    try:
        resp = await state.upstream.call(
            "POST",
            url,
            body=data,
            headers=await signed(state, "async_svc", "POST", url, tenant, data, idempotency_key),
            timeout_s=s.async_timeout_s,
        )
    except (UpstreamTimeout, UpstreamDown):
        # Unknown outcome: the client retries with its Idempotency-Key (see README)
        raise upstream_down("async") from None
    if resp.status != 202:
        return forward(resp, "/v1/summaries")
    job = resp.json()
    url = status_url(state, request, job["id"])
    out = AsyncAccepted(
        id=job["id"], status=job["status"], status_url=url, route_reason=reason, spill_reason=spill_reason
    )
    headers_out = {"Location": url}
    if resp.headers.get("Idempotent-Replayed"):
        headers_out["Idempotent-Replayed"] = "true"
    return JSONResponse(out.model_dump(mode="json"), status_code=202, headers=headers_out)


async def job_call(state: State, method: str, job_id: str, tenant: str) -> Response:
    """GET or DELETE of one job at async_svc (404 for an id that is not a UUID, without a hop)."""
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise Problem(404, "not-found", "Not found", "no summary job with this id") from None
    url = f"{state.settings.async_url}/internal/jobs/{job_id}"
    try:
        resp = await state.upstream.call(
            method,
            url,
            headers=await signed(state, "async_svc", method, url, tenant),
            timeout_s=state.settings.async_timeout_s,
        )
    except (UpstreamTimeout, UpstreamDown):
        raise upstream_down("async") from None
    if resp.status != 200:
        return forward(resp, f"/v1/summaries/{job_id}")
    return JSONResponse(resp.json(), status_code=200)
