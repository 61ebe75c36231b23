"""Public API ``/v1``: auth, limits, routing by token count, proxy to realtime_svc / async_svc."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import aiohttp
from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import ValidationError

from common.logs import setup_logging
from common.metrics import install_metrics
from common.problems import PROBLEM_JSON, Problem, install_problem_handlers
from common.schemas import (
    DEFAULT_REALTIME_SUMMARY_TOKENS,
    AsyncAccepted,
    JobView,
    Mode,
    RealtimeSummary,
    SummaryRequest,
    text_size_problem,
)
from common.tokenization import TokenCounter
from gateway.config import GatewaySettings, get_settings, hash_key
from gateway.ratelimit import TokenBucketLimiter

log = logging.getLogger(__name__)

ROUTED = Counter("precis_gateway_routed_total", "Requests routed by mode", ["mode", "reason"])
UPSTREAM_RETRIES = Counter(
    "precis_gateway_upstream_retries_total", "Realtime calls sent again after a connection died before any response"
)


class State:
    def __init__(self, settings: GatewaySettings, http: aiohttp.ClientSession, counter: TokenCounter) -> None:
        self.settings = settings
        self.http = http
        self.counter = counter
        self.keys = settings.key_table()
        self.limiter = TokenBucketLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    setup_logging(settings.service_name, settings.log_level)
    counter = TokenCounter(settings.tokenizer_path)
    # aiohttp, not httpx, for the hops to realtime_svc and async_svc: every realtime request
    # pays this hop, and on this project's CPU box an httpx call cost 1.8 ms of client CPU
    # against 0.36 ms for aiohttp (same server, same body: `make bench-http-client`).
    connector = aiohttp.TCPConnector(
        limit=settings.upstream_max_connections, keepalive_timeout=settings.upstream_keepalive_s
    )
    http = aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30.0, connect=2.0), auto_decompress=False
    )
    try:
        app.state.precis = State(settings, http, counter)
        yield
    finally:
        await http.close()


async def get_state(request: Request) -> State:
    # async: FastAPI runs a plain-def dependency in its threadpool (a thread hop per request)
    return request.app.state.precis


StateDep = Annotated[State, Depends(get_state)]


async def tenant_of(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Problem(
            401,
            "unauthorized",
            "Missing or invalid API key",
            "send 'Authorization: Bearer <api key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    tenant = state.keys.get(hash_key(authorization[7:].strip()))
    if tenant is None:
        raise Problem(
            401,
            "unauthorized",
            "Missing or invalid API key",
            "the API key is not recognised",
            headers={"WWW-Authenticate": "Bearer"},
        )
    wait = state.limiter.take(tenant)
    if wait > 0:
        raise Problem(
            429,
            "rate-limited",
            "Too many requests",
            f"tenant rate limit is {state.settings.rate_limit_per_minute} requests/minute "
            f"(burst {state.settings.rate_limit_burst})",
            headers={"Retry-After": str(max(1, int(wait + 0.999)))},
            limit_per_minute=state.settings.rate_limit_per_minute,
        )
    return tenant


TenantDep = Annotated[str, Depends(tenant_of)]


async def read_limited_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Problem(
            413,
            "request-too-large",
            "Request too large",
            f"request body is {declared} bytes; the limit is {limit} bytes",
            limit_bytes=limit,
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(
                413,
                "request-too-large",
                "Request too large",
                f"request body exceeds the limit of {limit} bytes",
                limit_bytes=limit,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _validation_problem(exc: ValidationError) -> Problem:
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
    return Problem(
        422,
        "validation-error",
        "Request body is not valid",
        "; ".join(f"{e['field']}: {e['message']}" for e in errors),
        errors=errors,
    )


@dataclass(frozen=True)
class Upstream:
    """An internal service's answer, read in full (bodies are small: one summary or one job)."""

    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


class UpstreamTimeout(Exception):
    pass


class UpstreamDown(Exception):
    pass


async def call_upstream(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    timeout_s: float,
    payload: Any = None,
    headers: dict[str, str] | None = None,
    retry_disconnect: bool = False,
) -> Upstream:
    """One call to an internal service. ``retry_disconnect`` (only for calls without side effects,
    like a realtime summary) sends the request once more, on a new connection, when the first
    connection died before any response: a pooled keep-alive connection to a pod that is shutting
    down (a rollout) is closed under the request, and the retry reaches a pod that is ready."""
    data = None
    hdrs = dict(headers or {})
    if payload is not None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        hdrs["Content-Type"] = "application/json"
    for attempt in (1, 2):
        try:
            async with http.request(
                method, url, data=data, headers=hdrs, timeout=aiohttp.ClientTimeout(total=timeout_s, connect=2.0)
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


def _forward(resp: Upstream) -> Response:
    """Relay an internal service's error as-is (it is already problem+json)."""
    headers = {k: v for k, v in resp.headers.items() if k.lower() in ("retry-after",)}
    media = resp.headers.get("content-type", PROBLEM_JSON)
    return Response(resp.body, status_code=resp.status, headers=headers, media_type=media)


def _upstream_down(name: str) -> Problem:
    return Problem(
        503,
        "upstream-unavailable",
        "Service unavailable",
        f"the {name} service cannot be reached; retry shortly",
        headers={"Retry-After": "2"},
    )


def status_url(state: State, request: Request, job_id: str) -> str:
    base = state.settings.public_base_url or str(request.base_url)
    return f"{base.rstrip('/')}/v1/summaries/{job_id}"


_REQUEST_SCHEMA = SummaryRequest.model_json_schema(ref_template="#/components/schemas/{model}")
_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {k: v for k, v in _REQUEST_SCHEMA.items() if k != "$defs"}}},
    }
}


def create_app() -> FastAPI:
    app = FastAPI(
        title="Précis",
        version="0.1.0",
        description="Summaries of short texts at once (realtime) and of long documents as jobs (async).",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    install_metrics(app, "gateway")

    @app.post(
        "/v1/summaries",
        responses={200: {"model": RealtimeSummary}, 202: {"model": AsyncAccepted}},
        openapi_extra=_OPENAPI_BODY,
    )
    async def create_summary(
        request: Request,
        state: StateDep,
        tenant: TenantDep,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
    ) -> Response:
        s = state.settings
        ctype = request.headers.get("content-type", "")
        if not ctype.split(";")[0].strip().lower() == "application/json":
            raise Problem(415, "unsupported-media-type", "Unsupported media type", "send the body as application/json")
        raw = await read_limited_body(request, s.max_request_bytes)
        try:
            body = SummaryRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise _validation_problem(exc) from None
        if p := text_size_problem(body.text):
            raise p

        mode, reason = body.mode, "explicit"
        if mode == Mode.auto:
            over = await state.counter.over_limit_async(body.text, s.routing_threshold_tokens)
            mode = Mode.realtime if over is None else Mode.async_
            reason = "threshold"
        ROUTED.labels(mode.value, reason).inc()

        if mode == Mode.realtime:
            if body.notify is not None:
                raise Problem(
                    422,
                    "validation-error",
                    "Request body is not valid",
                    "notify: only async summaries send notifications",
                )
            rid = str(uuid.uuid4())
            payload = {
                "text": body.text,
                "max_summary_tokens": body.max_summary_tokens or DEFAULT_REALTIME_SUMMARY_TOKENS,
                "language": body.language,
                "request_id": rid,
            }
            try:
                resp = await call_upstream(
                    state.http,
                    "POST",
                    f"{s.realtime_url}/internal/summarize",
                    payload=payload,
                    timeout_s=s.realtime_timeout_s,
                    retry_disconnect=True,
                )
            except UpstreamTimeout:
                raise Problem(
                    504, "upstream-timeout", "Summarization timed out", f"no summary within {s.realtime_timeout_s:g} s"
                ) from None
            except UpstreamDown:
                raise _upstream_down("realtime") from None
            if resp.status != 200:
                return _forward(resp)
            # realtime_svc's body is already the public RealtimeSummary: relay the bytes as they are
            return Response(resp.body, status_code=200, media_type="application/json")

        payload = {
            "text": body.text,
            "max_summary_tokens": body.max_summary_tokens,
            "language": body.language,
            "notify": body.notify.model_dump(mode="json", exclude_none=True) if body.notify else None,
            "metadata": body.metadata,
        }
        headers = {"X-Precis-Tenant": tenant}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            resp = await call_upstream(
                state.http,
                "POST",
                f"{s.async_url}/internal/jobs",
                payload=payload,
                headers=headers,
                timeout_s=s.async_timeout_s,
            )
        except (UpstreamTimeout, UpstreamDown):
            # Unknown outcome: the client retries with its Idempotency-Key (see README)
            raise _upstream_down("async") from None
        if resp.status != 202:
            return _forward(resp)
        job = resp.json()
        url = status_url(state, request, job["id"])
        out = AsyncAccepted(id=job["id"], status=job["status"], status_url=url)
        headers_out = {"Location": url}
        if resp.headers.get("Idempotent-Replayed"):
            headers_out["Idempotent-Replayed"] = "true"
        return JSONResponse(out.model_dump(mode="json"), status_code=202, headers=headers_out)

    async def _job_call(state: State, method: str, job_id: str, tenant: str) -> Response:
        try:
            uuid.UUID(job_id)
        except ValueError:
            raise Problem(404, "not-found", "Not found", "no summary job with this id") from None
        try:
            resp = await call_upstream(
                state.http,
                method,
                f"{state.settings.async_url}/internal/jobs/{job_id}",
                headers={"X-Precis-Tenant": tenant},
                timeout_s=state.settings.async_timeout_s,
            )
        except (UpstreamTimeout, UpstreamDown):
            raise _upstream_down("async") from None
        if resp.status != 200:
            return _forward(resp)
        return JSONResponse(resp.json(), status_code=200)

    @app.get("/v1/summaries/{job_id}", response_model=JobView)
    async def get_summary(job_id: str, state: StateDep, tenant: TenantDep) -> Response:
        return await _job_call(state, "GET", job_id, tenant)

    @app.delete("/v1/summaries/{job_id}", response_model=JobView)
    async def cancel_summary(job_id: str, state: StateDep, tenant: TenantDep) -> Response:
        return await _job_call(state, "DELETE", job_id, tenant)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(state: StateDep) -> JSONResponse:
        async def probe(url: str) -> bool:
            try:
                return (await call_upstream(state.http, "GET", f"{url}/readyz", timeout_s=2.0)).status == 200
            except (UpstreamTimeout, UpstreamDown):
                return False

        rt, asy = await asyncio.gather(probe(state.settings.realtime_url), probe(state.settings.async_url))
        checks = {"realtime_svc": rt, "async_svc": asy}
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    return app


app = create_app()
