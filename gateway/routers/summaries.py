"""``/v1/summaries``: create (routed realtime or async), read and cancel a summary job."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from common.schemas import AsyncAccepted, JobView, Mode, RealtimeSummary, SummaryRequest
from gateway.body import parse_summary_request, read_limited_body, require_json
from gateway.deps import IdempotencyKey, StateDep, TenantDep
from gateway.proxy import job_call, to_async, to_realtime
from gateway.routing import choose_mode

router = APIRouter()

# The body is read by hand (gateway/body.py), so FastAPI does not see it: describe it for OpenAPI.
_REQUEST_SCHEMA = SummaryRequest.model_json_schema(ref_template="#/components/schemas/{model}")
_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {k: v for k, v in _REQUEST_SCHEMA.items() if k != "$defs"}}},
    }
}


@router.post(
    "/v1/summaries",
    responses={200: {"model": RealtimeSummary}, 202: {"model": AsyncAccepted}},
    openapi_extra=_OPENAPI_BODY,
)
async def create_summary(
    request: Request,
    state: StateDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKey = None,
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
    if await choose_mode(state, body) == Mode.realtime:
        return await to_realtime(state, body)
    return await to_async(state, request, body, tenant, idempotency_key)


@router.get("/v1/summaries/{job_id}", response_model=JobView)
async def get_summary(job_id: str, state: StateDep, tenant: TenantDep) -> Response:
    return await job_call(state, "GET", job_id, tenant)


@router.delete("/v1/summaries/{job_id}", response_model=JobView)
async def cancel_summary(job_id: str, state: StateDep, tenant: TenantDep) -> Response:
    return await job_call(state, "DELETE", job_id, tenant)
