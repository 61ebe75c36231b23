"""The worker's job runner: one message → lease the job → map-reduce → settle its outcome.

The Kafka side (partitions, pause/resume, commits, rebalance, drain) is :mod:`common.consumer`;
its handler here is :meth:`JobRunner.handle_batch`, which returns once every job of the batch has
a durable outcome (its offsets may then be committed). Every status change goes through the state
machine (common/store/transitions.py) via this worker's :class:`~worker.jobstate.JobStore`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from common import kafka
from common.aio import gather_or_cancel
from common.metrics import LATENCY_BUCKETS
from common.schemas import JobMessage, JobStatus
from common.store import Database, Job
from common.store.transitions import Outcome, RetryPolicy
from common.tokenization import TokenCounter
from common.triton_client import TritonFailure
from worker.config import WorkerSettings
from worker.jobstate import Cancelled, JobStore, LeaseLost
from worker.mapreduce import InvalidDocument, ModelCaller, summarize_document

log = logging.getLogger(__name__)

JOBS_DONE = Counter("precis_worker_jobs_total", "Jobs finished by this worker, by outcome", ["outcome"])
JOB_SECONDS = Histogram(
    "precis_worker_job_duration_seconds", "Job run time", ["outcome"], buckets=LATENCY_BUCKETS + (300, 600, 1200, 2400)
)
ACTIVE = Gauge("precis_worker_active_jobs", "Jobs running in this worker")
RETRIES = Counter("precis_worker_retries_total", "Jobs sent to the retry topic")

# What a client may read about a failed attempt (issue #14, item 9): a stable reason per kind of
# failure, stored as the job's error.detail (GET, the job.failed event, mail and webhooks, the
# retry and DLQ messages). An exception's own text can hold internal addresses, paths, SQL or
# library internals, so it goes to this worker's log only (_failed).
TRITON_REASONS = {
    "unavailable": "model server unavailable",
    "overloaded": "model server overloaded",
    "deadline": "model server timed out",
    "invalid": "the model refused the input",
    "internal": "model server error",
}


def client_reason(exc: BaseException) -> str:
    """The client-safe reason for a failed attempt (never the exception's text, except for an
    :class:`~worker.mapreduce.InvalidDocument`, whose message is written for the client)."""
    if isinstance(exc, TritonFailure):
        return TRITON_REASONS.get(exc.kind, "model server error")
    if isinstance(exc, InvalidDocument):
        return str(exc)
    if isinstance(exc, ValueError):
        return "the document could not be processed"
    return "internal error"


class ByteBudget:
    """The documents this worker holds at once, bounded in bytes (a poll may bring
    ``max_poll_records`` jobs of up to 10 MB each). A job waits, holding its lease (renewed),
    until its document fits; one larger than the whole budget runs alone. Hand-written: asyncio's
    semaphores count permits one at a time, and this needs a weighted one.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        size = max(0, min(size, self.limit))
        async with self._cond:
            await self._cond.wait_for(lambda: self.used + size <= self.limit)
            self.used += size
        try:
            yield
        finally:
            async with self._cond:
                self.used -= size
                self._cond.notify_all()


@dataclass
class LeasedJob:
    """A job this worker holds, as the claim read it (loaded once per run)."""

    job: Job
    cancelled: Callable[[], bool]  # set by the lease renewer on cancellation or a lost lease


class JobRunner:
    def __init__(self, settings: WorkerSettings, db: Database, model: ModelCaller, counter: TokenCounter, owner: str):
        self.s = settings
        self.db = db
        self.model = model
        self.counter = counter
        self.store = JobStore(db, owner, settings.lease_ttl_s, settings.max_attempts, settings.retention)
        self.documents = ByteBudget(settings.max_document_bytes_in_flight)
        self.retry = RetryPolicy(settings.max_attempts, settings.retry_backoff_s, settings.retry_backoff_max_s)
        # Jobs this process is running now: a duplicate delivery of one of them (e.g. the job's
        # retry message and its original message on two partitions) waits instead of running it
        # twice side by side (the lease alone cannot tell: both copies have the same owner).
        self.active_jobs: set[str] = set()

    # ---- messages ----------------------------------------------------------------------------

    async def handle_batch(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        """Batch drain: every record of this poll runs at once (their chunks share Triton's batches,
        bounded by the in-flight semaphore); the offset moves past the batch only when every
        outcome in it is durable. A failure leaves the whole batch uncommitted: redelivered
        records of finished jobs are no-ops."""
        await gather_or_cancel([asyncio.create_task(self.handle(rec.value)) for rec in records])

    async def handle(self, raw: bytes) -> None:
        try:
            msg = JobMessage.model_validate(kafka.loads(raw))
        except (ValidationError, ValueError) as exc:
            log.error("dropping malformed job message: %s", exc)  # poison pill: nothing to retry
            return
        if msg.not_before is not None:
            wait = (msg.not_before - datetime.now(UTC)).total_seconds()
            if wait > 0:
                log.info("job %s: retry %d waits %.1fs", msg.job_id, msg.attempt, wait)
                await asyncio.sleep(wait)
        await self.run_job(msg)

    # ---- one job -----------------------------------------------------------------------------

    async def _acquire(self, job_id: str) -> Job | None:
        """Claim the job, waiting while another holder's lease is live; None when there is
        nothing to run (unknown, finished, or cancelling, which this settles)."""
        while True:
            if job_id not in self.active_jobs:
                job = await self.store.take(job_id)
                if job is not None:
                    return job
            job = await self.store.load(job_id)
            if job is None:
                log.warning("job %s not in store; skipping", job_id)
                return None
            if job.status.terminal:
                return None  # redelivery of a finished job: nothing to do
            if job.status == JobStatus.cancelling:
                await self.store.cancel(job_id)
                return None
            # Another worker holds a live lease (duplicate delivery): wait for it to finish or expire.
            await asyncio.sleep(min(self.s.lease_ttl_s / 3, 5.0))

    @asynccontextmanager
    async def leased(self, job_id: str) -> AsyncIterator[LeasedJob | None]:
        """Hold the job's lease for the block: renewed in the background (which also notices a
        cancel), given back at once if the block is cancelled (rebalance, drain)."""
        job = await self._acquire(job_id)
        if job is None:
            yield None
            return
        self.active_jobs.add(job_id)
        stop_flag = asyncio.Event()
        renewer = asyncio.create_task(self._renew(job_id, stop_flag))
        ACTIVE.inc()
        try:
            yield LeasedJob(job, stop_flag.is_set)
        except asyncio.CancelledError:
            await asyncio.shield(self.store.release(job_id))
            raise
        finally:
            renewer.cancel()
            self.active_jobs.discard(job_id)
            ACTIVE.dec()

    async def _renew(self, job_id: str, stop_flag: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.s.lease_ttl_s / 3)
            try:
                if await self.store.renew(job_id) == JobStatus.cancelling:
                    stop_flag.set()
            except LeaseLost:
                stop_flag.set()
                return
            except Exception as exc:  # noqa: BLE001 - a DB blip: try again next period
                log.warning("lease renewal for %s failed: %s", job_id, exc)

    async def run_job(self, msg: JobMessage) -> None:
        job_id = msg.job_id
        async with self.leased(job_id) as leased:
            if leased is None:
                return
            job = leased.job
            started = time.perf_counter()
            outcome: str = JobStatus.succeeded.value
            try:
                async with self.documents.hold(job.document_bytes):
                    # Loaded only now, inside the byte budget (the claim does not read it).
                    document = await self.store.document(job_id)
                    if document is None:
                        raise LeaseLost(job_id)  # the row is gone (retention): nothing to write
                    summary, total = await summarize_document(
                        job_id=job_id,
                        document=document,
                        language=job.params.language,
                        tenant=job.tenant,
                        final_tokens=job.params.max_summary_tokens,
                        store=self.store,
                        model=self.model,
                        counter=self.counter,
                        chunk_tokens=self.s.chunk_tokens,
                        chunk_summary_tokens=self.s.chunk_summary_tokens,
                        is_cancelled=leased.cancelled,
                    )
                    del document
                if not await self.store.succeed(job_id, summary, total):
                    # Cancelled at the very end, or the lease moved on: settle what the store says.
                    await self.store.cancel(job_id)
                    outcome = Outcome.superseded.value
            except Cancelled:
                outcome = JobStatus.cancelled.value
                await self.store.cancel(job_id)
            except LeaseLost:
                outcome = "lease_lost"
            except TritonFailure as f:
                outcome = await self._failed(msg, job.attempts, f, permanent=f.kind == "invalid")
            except ValueError as e:
                outcome = await self._failed(msg, job.attempts, e, permanent=True)
            except Exception as e:
                log.exception("job %s failed", job_id)  # the traceback stays in this log
                outcome = await self._failed(msg, job.attempts, e, permanent=False)
        JOBS_DONE.labels(outcome).inc()
        JOB_SECONDS.labels(outcome).observe(time.perf_counter() - started)
        log.info("job %s: %s in %.1fs", job_id, outcome, time.perf_counter() - started)

    async def _failed(self, msg: JobMessage, attempts: int, exc: Exception, *, permanent: bool) -> str:
        reason = client_reason(exc)
        # The full text stays server-side.
        kind = f"triton {exc.kind}" if isinstance(exc, TritonFailure) else type(exc).__name__
        log.warning("job %s: attempt %d failed: %s: %s (client sees: %s)", msg.job_id, attempts, kind, exc, reason)
        outcome, delay = await self.store.fail_or_retry(msg, self.retry, attempts, reason, permanent=permanent)
        if outcome == Outcome.retry:
            RETRIES.inc()
            log.warning("job %s: attempt %d failed (%s); retry in %.0fs", msg.job_id, attempts, reason, delay)
        return outcome.value
