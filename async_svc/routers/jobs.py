"""``/internal/jobs``: create (idempotent per tenant and key), list, read and cancel summary jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from async_svc.deps import IdempotencyKey, StateDep, TenantDep, verified_tenant
from async_svc.jobs import cancel_job, create_job, get_job, to_view
from async_svc.listing import MAX_CURSOR_CHARS, list_jobs
from common.problems import invalid_body
from common.schemas import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    MAX_SUMMARY_TOKENS,
    JobList,
    JobStatus,
    JobView,
    Notify,
    text_size_problem,
)

# Every route here needs the gateway's signed token, also one added later without a TenantDep
# (FastAPI computes the dependency once per request); the probes and /metrics stay open.
router = APIRouter(dependencies=[Depends(verified_tenant)])


class CreateJob(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1)
    max_summary_tokens: int | None = Field(default=None, ge=1, le=MAX_SUMMARY_TOKENS)
    language: str = "auto"
    notify: Notify | None = None
    metadata: dict[str, Any] | None = None


@router.post("/internal/jobs", status_code=202, response_model=JobView)
async def create(
    body: CreateJob,
    state: StateDep,
    tenant: TenantDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobView:
    if p := text_size_problem(body.text, state.settings.max_document_bytes):
        raise p
    if not body.text.strip():
        raise invalid_body("text: must not be blank")
    job, created = await create_job(
        state.db,
        tenant=tenant,
        text=body.text,
        max_summary_tokens=body.max_summary_tokens,
        language=body.language,
        notify=body.notify.model_dump(mode="json", exclude_none=True) if body.notify else None,
        metadata=body.metadata,
        idempotency_key=idempotency_key,
        committer=state.committer,
    )
    if created:
        state.relay.kick()
    else:
        response.headers["Idempotent-Replayed"] = "true"
    return to_view(job)


@router.get("/internal/jobs", response_model=JobList)
async def list_(
    state: StateDep,
    tenant: TenantDep,
    status: JobStatus | None = None,
    created_after: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)] = None,
) -> JobList:
    return await list_jobs(state.db, tenant, status=status, created_after=created_after, limit=limit, cursor=cursor)


@router.get("/internal/jobs/{job_id}", response_model=JobView)
async def read(job_id: str, state: StateDep, tenant: TenantDep) -> JobView:
    return await get_job(state.db, tenant, job_id)


@router.delete("/internal/jobs/{job_id}", response_model=JobView)
async def cancel(job_id: str, state: StateDep, tenant: TenantDep) -> JobView:
    view = await cancel_job(state.db, tenant, job_id, state.settings.retention)
    state.relay.kick()
    return view
