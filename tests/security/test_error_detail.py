"""A failed job tells its client why in stable, client-safe words, never an exception's text
(issue #14, item 9).

The worker stored ``f"{type(e).__name__}: {e}"`` (or Triton's own message) as the job's
error.detail, which GET /v1/jobs/{id}, the job.failed event, mail and webhooks relay: internal
addresses, file paths, SQL and library internals reached the client. Here a real worker runner
(worker/runner.py) runs real jobs in the real store (SQLite and PostgreSQL) against a model that
fails with such text; only the model is a stand-in (it raises).
"""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from async_svc.jobs import create_job, get_job
from common import kafka
from common.schemas import JobMessage, JobStatus
from common.store import OutboxMessage
from common.tokenization import TokenCounter
from common.triton_client import TritonFailure
from worker.config import WorkerSettings
from worker.runner import JobRunner

INTERNAL = "10.3.7.21:8001 /opt/tritonserver/backends/python/stub.cc:1187 postgresql://precis:hunter2@db"


class FailingModel:
    """The model caller, failing every call with ``exc`` (internals in its text)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def summarize(self, text: str, max_tokens: int, language: str, tenant: str = "") -> str:
        raise self.exc


CASES = [
    # (what the model raises, permanent?, the client-safe reason)
    (TritonFailure("unavailable", f"failed to connect to all addresses; last error: {INTERNAL}"), False,
     "model server unavailable"),
    (TritonFailure("deadline", f"Deadline Exceeded at {INTERNAL}"), False, "model server timed out"),
    (TritonFailure("invalid", f"[StatusCode.INVALID_ARGUMENT] in {INTERNAL}"), True, "the model refused the input"),
    (RuntimeError(f"connection reset by peer {INTERNAL}"), False, "internal error"),
    (KeyError(INTERNAL), False, "internal error"),
    (ValueError(f"invalid literal for int() with base 10: {INTERNAL!r}"), True, "the document could not be processed"),
]  # fmt: skip


async def _job(db, max_attempts: int):
    job, _ = await create_job(
        db,
        tenant="acme",
        text="The council voted on Tuesday to extend the bike lane network. " * 4,
        max_summary_tokens=None,
        language="en",
        notify=None,
        metadata=None,
        idempotency_key=None,
    )
    async with db.session() as s:
        row = (await s.execute(select(OutboxMessage).where(OutboxMessage.topic == kafka.JOBS))).scalars().one()
    return job, JobMessage.model_validate(row.value)


def _runner(db, model, max_attempts: int) -> JobRunner:
    settings = WorkerSettings(env="test", database_url=db.url, max_attempts=max_attempts, retry_backoff_s=0)
    return JobRunner(settings, db, model, TokenCounter(), "worker-test")


@pytest.mark.parametrize(
    ("exc", "permanent", "reason"), CASES, ids=[f"{type(c[0]).__name__}-{getattr(c[0], 'kind', '')}" for c in CASES]
)
async def test_a_failed_job_shows_a_reason_not_the_exception(db, exc, permanent, reason, caplog):
    job, msg = await _job(db, 1)
    with caplog.at_level(logging.WARNING, logger="worker.runner"):
        await _runner(db, FailingModel(exc), max_attempts=1).run_job(msg)
    view = await get_job(db, "acme", job.id)
    assert view.status == JobStatus.failed and view.error is not None
    assert view.error.type == ("invalid_input" if permanent else "model_error")
    detail = view.error.detail
    assert detail == (reason if permanent else f"gave up after 1 attempts; last error: {reason}")
    for internal in ("10.3.7", "/opt/", "hunter2", "postgresql", "stub.cc", "StatusCode", type(exc).__name__):
        assert internal not in detail, detail
    # the dead letter carries the same words; the full text stays in the worker's log
    async with db.session() as s:
        dead = (await s.execute(select(OutboxMessage).where(OutboxMessage.topic == kafka.JOBS_DLQ))).scalars().one()
    assert dead.value["last_error"] == detail
    assert any(INTERNAL in r.getMessage() and job.id in r.getMessage() for r in caplog.records)


async def test_a_retried_job_shows_the_reason_while_it_waits(db):
    job, msg = await _job(db, 2)
    failure = TritonFailure("unavailable", f"failed to connect to all addresses; last error: {INTERNAL}")
    await _runner(db, FailingModel(failure), max_attempts=2).run_job(msg)
    async with db.session() as s:
        retry = (await s.execute(select(OutboxMessage).where(OutboxMessage.topic == kafka.JOBS_RETRY))).scalars().one()
        row = await s.get(type(job), job.id)
        assert row is not None and row.status == JobStatus.queued
        assert row.error_detail == "retrying: model server unavailable"
    assert retry.value["last_error"] == "model server unavailable"
