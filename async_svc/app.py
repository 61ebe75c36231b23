"""async_svc HTTP API (internal; only the gateway calls it)."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from async_svc.config import AsyncSettings, get_settings
from async_svc.intake import GroupCommitter
from async_svc.jobs import cancel_job, create_job, get_job, to_view
from common import kafka
from common.logs import setup_logging
from common.metrics import install_metrics
from common.outbox import OutboxRelay
from common.problems import Problem, install_problem_handlers
from common.schemas import MAX_SUMMARY_TOKENS, JobView, Notify, text_size_problem
from common.store import Database

log = logging.getLogger(__name__)


class CreateJob(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1)
    max_summary_tokens: int | None = Field(default=None, ge=1, le=MAX_SUMMARY_TOKENS)
    language: str = "auto"
    notify: Notify | None = None
    metadata: dict[str, Any] | None = None


class State:
    def __init__(self, settings: AsyncSettings, db: Database, relay: OutboxRelay, committer: GroupCommitter) -> None:
        self.settings = settings
        self.db = db
        self.relay = relay
        self.committer = committer


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    setup_logging(settings.service_name, settings.log_level)
    db = Database(settings.database_url)
    producer = kafka.make_producer(settings, client_id="async_svc")
    await kafka.ensure_topics(settings, timeout_s=120)
    await producer.start()
    relay = OutboxRelay(db, producer, poll_s=settings.outbox_poll_s)
    relay.start()
    committer = GroupCommitter(db, max_batch=settings.intake_max_batch, fault=_fault_hook(settings.fault_inject))
    committer.start()
    app.state.precis = State(settings, db, relay, committer)
    log.info("async_svc ready")
    try:
        yield
    finally:
        await committer.stop()
        await relay.stop()
        await producer.stop()
        await db.close()


def _fault_hook(mode: str):
    """tests/faults: die by SIGKILL at the named point of job creation (nothing runs after it)."""
    if not mode:
        return None

    def hit(point: str) -> None:
        if point == mode:
            log.warning("fault injection: SIGKILL at %s", point)
            os.kill(os.getpid(), signal.SIGKILL)

    return hit


async def get_state(request: Request) -> State:
    # async: FastAPI runs a plain-def dependency in its threadpool (a thread hop per request)
    return request.app.state.precis


StateDep = Annotated[State, Depends(get_state)]
TenantDep = Annotated[str, Header(alias="X-Precis-Tenant", min_length=1, max_length=128)]


def create_app() -> FastAPI:
    app = FastAPI(title="Précis async_svc", version="0.1.0", lifespan=lifespan)
    install_problem_handlers(app)
    install_metrics(app, "async_svc")

    @app.post("/internal/jobs", status_code=202, response_model=JobView)
    async def create(
        body: CreateJob,
        state: StateDep,
        tenant: TenantDep,
        response: Response,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
    ) -> JobView:
        if p := text_size_problem(body.text, state.settings.max_document_bytes):
            raise p
        if not body.text.strip():
            raise Problem(422, "validation-error", "Request body is not valid", "text: must not be blank")
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

    @app.get("/internal/jobs/{job_id}", response_model=JobView)
    async def read(job_id: str, state: StateDep, tenant: TenantDep) -> JobView:
        return await get_job(state.db, tenant, job_id)

    @app.delete("/internal/jobs/{job_id}", response_model=JobView)
    async def cancel(job_id: str, state: StateDep, tenant: TenantDep) -> JobView:
        view = await cancel_job(state.db, tenant, job_id)
        state.relay.kick()
        return view

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(state: StateDep) -> JSONResponse:
        checks = {"database": await state.db.ping(), "kafka_outbox": state.relay.healthy}
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    return app


app = create_app()
