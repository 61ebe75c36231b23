"""``/v1/summaries``: create (routed realtime or async), list, read and cancel summary jobs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from common.problems import Problem
from common.schemas import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    AsyncAccepted,
    Estimate,
    JobList,
    JobStatus,
    JobView,
    Mode,
    RealtimeSummary,
    SpillReason,
)
from common.streaming import SSE
from gateway.body import parse_summary_request, read_limited_body, require_json
from gateway.deps import IdempotencyKey, StateDep, TenantDep
from gateway.estimate import estimate
from gateway.proxy import RealtimeRefused, job_call, signed, to_async, to_realtime, to_realtime_stream
from gateway.routing import Route, choose_mode, counted, spill
from gateway.upstream import UpstreamDown, UpstreamTimeout, forward, upstream_down

JSON = "application/json"


def _query_names(dependant: Any) -> set[str]:
    """The query parameters a route and its dependencies declare (FastAPI's flattening helper is
    not public API)."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def no_unknown_query(request: Request) -> None:
    """422 for a query parameter the operation does not take (``?dryrun=true`` would otherwise be
    ignored silently and create a real job). Schemathesis found such requests accepted."""
    route = request.scope.get("route")
    if route is None or not request.query_params:
        return
    known = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise Problem(
            422,
            "validation-error",
            "Request body is not valid",
            f"unknown query parameter(s): {', '.join(unknown)[:200]}; this operation takes: {takes}",
        )


router = APIRouter(dependencies=[Depends(no_unknown_query)])


def accepts_event_stream(request: Request) -> bool:
    """``Accept: text/event-stream`` asks for a streamed summary, as ``stream: true`` does. Only
    when named as such: ``*/*`` or a list that also names JSON first keeps the JSON answer."""
    accept = request.headers.get("accept", "")
    types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return SSE in types and (JSON not in types or types.index(SSE) < types.index(JSON))


# The body is read by hand (gateway/body.py), so FastAPI does not see it: gateway/openapi.py
# documents it (OPERATIONS["create_summary"], the SummaryRequest schema), with every operation's
# problem responses and examples.


@router.post(
    "/v1/summaries",
    responses={200: {"model": RealtimeSummary | Estimate}, 202: {"model": AsyncAccepted}},
)
async def create_summary(
    request: Request,
    state: StateDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKey = None,
    dry_run: Annotated[
        bool,
        Query(
            description=(
                "true: validate the request as a submit would and answer 200 with its Estimate "
                "(tokens, chunks, model calls, route, ETA); nothing is created"
            )
        ),
    ] = False,
) -> Response:
    require_json(request)
    limit, limits = state.settings.max_request_bytes, state.limits
    # The tenant's bytes per minute: a declared length is charged before the body is read (a
    # tenant over its quota is refused unread), a chunked body once read (bounded by `limit`).
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) <= limit:
        await limits.charge(request, limits.bytes, tenant, int(declared))
        raw = await read_limited_body(request, limit)
    else:
        raw = await read_limited_body(request, limit)
        await limits.charge(request, limits.bytes, tenant, len(raw))
    body = parse_summary_request(raw)
    if not body.stream and accepts_event_stream(request):
        body = body.model_copy(update={"stream": True})
    route = await choose_mode(state, body)
    if dry_run:  # the same checks, no job, no message, the Idempotency-Key ignored
        return await estimate(state, body, tenant, route.mode, len(raw))
    if body.stream:
        counted(route)
        return await to_realtime_stream(state, body, tenant)
    if route.mode == Mode.async_:
        return await to_async(state, request, body, tenant, idempotency_key, counted(route))
    settings = state.settings
    if not (route.may_spill and settings.spillover_enabled):
        counted(route)
        return await to_realtime(state, body, tenant)
    # mode=auto, short: realtime unless it refuses before starting (gateway/routing.py)
    if idempotency_key and (earlier := await state.spilled_keys.reason(tenant, idempotency_key)):
        # a retry of a spilled request: its job (async_svc replays it), not a summary as well
        return await to_async(
            state, request, body, tenant, idempotency_key, counted(Route(Mode.async_, "spilled_over")), earlier
        )
    spilled: SpillReason | None = None
    try:
        return await to_realtime(state, body, tenant, max_wait_s=settings.spillover_max_wait_s)
    except RealtimeRefused as refused:
        spilled = refused.reason
    finally:
        if spilled is None:  # realtime answered (a summary or an error): counted as realtime
            counted(route)
    resp = await to_async(state, request, body, tenant, idempotency_key, spill(spilled), spilled)
    if idempotency_key and resp.status_code == 202:
        await state.spilled_keys.remember(tenant, idempotency_key, spilled)
    return resp


# async_svc decodes the cursor (422 invalid-cursor); the gateway bounds its size only.
MAX_CURSOR_CHARS = 512


@router.get("/v1/summaries", response_model=JobList)
async def list_summaries(
    state: StateDep,
    tenant: TenantDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    created_after: Annotated[
        datetime | None, Query(description="Only jobs created after this instant (ISO 8601; no zone = UTC).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT, description="Jobs per page.")] = DEFAULT_LIST_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=MAX_CURSOR_CHARS, description="The next_cursor of the previous page.")
    ] = None,
) -> Response:
    """The caller's async jobs, newest first, a page at a time (follow ``next_cursor``)."""
    params: dict[str, str | int] = {"limit": limit}
    if status is not None:
        params["status"] = status.value
    if created_after is not None:
        aware = created_after if created_after.tzinfo else created_after.replace(tzinfo=UTC)
        params["created_after"] = aware.isoformat()
    if cursor is not None:
        params["cursor"] = cursor
    # The token binds method and path, not the query: a captured one could only list the same
    # tenant's jobs with other filters within its 30 s, which a read token allows anyway.
    url = f"{state.settings.async_url}/internal/jobs"
    try:
        resp = await state.upstream.call(
            "GET",
            f"{url}?{urlencode(params)}",
            headers=await signed(state, "async_svc", "GET", url, tenant),
            timeout_s=state.settings.async_timeout_s,
        )
    except (UpstreamTimeout, UpstreamDown):
        raise upstream_down("async") from None
    if resp.status != 200:
        return forward(resp, "/v1/summaries")
    return JSONResponse(resp.json(), status_code=200)


@router.get("/v1/summaries/{job_id}", response_model=JobView)
async def get_summary(job_id: str, state: StateDep, tenant: TenantDep) -> Response:
    return await job_call(state, "GET", job_id, tenant)


@router.delete("/v1/summaries/{job_id}", response_model=JobView)
async def cancel_summary(job_id: str, state: StateDep, tenant: TenantDep) -> Response:
    return await job_call(state, "DELETE", job_id, tenant)
