"""The worker's Kafka loop.

Pattern (after aiokafka's concurrent-consumption example): one task per partition with work; that
partition is paused while its task runs, and the main loop keeps calling ``getmany`` so heartbeats
and the max-poll-interval are honoured however long a job takes. A partition's offset is committed
only after the job's outcome is durable in the store (manual commits, at-least-once delivery).
A rebalance listener releases jobs of revoked partitions; SIGTERM drains (finish or release,
commit, leave the group).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from common import kafka
from common.aio import gather_or_cancel
from common.metrics import LATENCY_BUCKETS
from common.schemas import JobMessage, JobStatus
from common.store import Database
from common.tokenization import TokenCounter
from common.triton_client import TritonFailure
from worker.config import WorkerSettings
from worker.jobstate import Cancelled, JobStore, LeaseLost
from worker.mapreduce import ModelCaller, summarize_document

log = logging.getLogger(__name__)

JOBS_DONE = Counter("precis_worker_jobs_total", "Jobs finished by this worker, by outcome", ["outcome"])
JOB_SECONDS = Histogram(
    "precis_worker_job_duration_seconds", "Job run time", ["outcome"], buckets=LATENCY_BUCKETS + (300, 600, 1200, 2400)
)
ACTIVE = Gauge("precis_worker_active_jobs", "Jobs running in this worker")
RETRIES = Counter("precis_worker_retries_total", "Jobs sent to the retry topic")


class Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked) -> None:
        # Stop jobs of partitions we lose; their leases are released so the new owner starts at
        # once, from the checkpoints. Offsets of unfinished messages stay uncommitted.
        if revoked:
            log.info("revoked %s", sorted(f"{tp.topic}:{tp.partition}" for tp in revoked))
        await self.worker.abandon([tp for tp in revoked if tp in self.worker.tasks])

    async def on_partitions_assigned(self, assigned) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))


class Worker:
    def __init__(self, settings: WorkerSettings, db: Database, model: ModelCaller, counter: TokenCounter) -> None:
        self.s = settings
        self.db = db
        self.model = model
        self.counter = counter
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.store = JobStore(db, self.owner, settings.lease_ttl_s)
        self.tasks: dict[TopicPartition, asyncio.Task] = {}
        # Jobs this process is running now: a duplicate delivery of one of them (e.g. the job's
        # retry message and its original message on two partitions) waits instead of running it
        # twice side by side (the lease alone cannot tell: both copies have the same owner).
        self.active_jobs: set[str] = set()
        self.consumer: AIOKafkaConsumer | None = None
        self.stopping = asyncio.Event()
        self.running = False

    # ---- message handling --------------------------------------------------------------------

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

    async def run_job(self, msg: JobMessage) -> None:
        job_id = msg.job_id
        while True:
            job = await self.store.load(job_id)
            if job is None:
                log.warning("job %s not in store; skipping", job_id)
                return
            status = JobStatus(job.status)
            if status.terminal:
                return  # redelivery of a finished job: nothing to do
            if status == JobStatus.cancelling:
                await self.store.cancel(job_id)
                return
            if job_id not in self.active_jobs and await self.store.claim(job_id):
                self.active_jobs.add(job_id)
                break
            # Another worker holds a live lease (duplicate delivery): wait for it to finish or expire.
            await asyncio.sleep(min(self.s.lease_ttl_s / 3, 5.0))

        job = await self.store.load(job_id)
        assert job is not None
        started = time.perf_counter()
        ACTIVE.inc()
        stop_flag = asyncio.Event()  # set by the lease renewer on cancellation or a lost lease
        renewer = asyncio.create_task(self._renew(job_id, stop_flag))
        is_cancelled = stop_flag.is_set

        outcome = "succeeded"
        try:
            summary, total = await summarize_document(
                job_id=job_id,
                document=job.document,
                language=job.params.get("language", "auto"),
                final_tokens=int(job.params.get("max_summary_tokens", 256)),
                store=self.store,
                model=self.model,
                counter=self.counter,
                chunk_tokens=self.s.chunk_tokens,
                chunk_summary_tokens=self.s.chunk_summary_tokens,
                is_cancelled=is_cancelled,
            )
            if not await self.store.succeed(job_id, summary, total):
                # Cancelled at the very end, or the lease moved on: settle what the store says.
                await self.store.cancel(job_id)
                outcome = "superseded"
        except Cancelled:
            outcome = "cancelled"
            await self.store.cancel(job_id)
        except LeaseLost:
            outcome = "lease_lost"
        except TritonFailure as f:
            outcome = await self._failed(msg, job.attempts, f"triton {f.kind}: {f}", permanent=f.kind == "invalid")
        except ValueError as e:
            outcome = await self._failed(msg, job.attempts, str(e), permanent=True)
        except asyncio.CancelledError:
            await asyncio.shield(self.store.release(job_id))
            raise
        except Exception as e:
            log.exception("job %s failed", job_id)
            outcome = await self._failed(msg, job.attempts, f"{type(e).__name__}: {e}", permanent=False)
        finally:
            renewer.cancel()
            self.active_jobs.discard(job_id)
            ACTIVE.dec()
        JOBS_DONE.labels(outcome).inc()
        JOB_SECONDS.labels(outcome).observe(time.perf_counter() - started)
        log.info("job %s: %s in %.1fs", job_id, outcome, time.perf_counter() - started)

    async def _failed(self, msg: JobMessage, attempts: int, error: str, *, permanent: bool) -> str:
        if permanent or attempts >= self.s.max_attempts:
            why = error if permanent else f"gave up after {attempts} attempts; last error: {error}"
            await self.store.fail(msg.job_id, "model_error" if not permanent else "invalid_input", why, msg)
            return "failed"
        delay = min(self.s.retry_backoff_s * (2 ** (attempts - 1)), self.s.retry_backoff_max_s)
        if await self.store.schedule_retry(msg.job_id, msg, error, delay):
            RETRIES.inc()
            log.warning("job %s: attempt %d failed (%s); retry in %.0fs", msg.job_id, attempts, error, delay)
        return "retry"

    async def _renew(self, job_id: str, stop_flag: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.s.lease_ttl_s / 3)
            try:
                if await self.store.renew(job_id) == JobStatus.cancelling.value:
                    stop_flag.set()
            except LeaseLost:
                stop_flag.set()
                return
            except Exception as exc:  # noqa: BLE001 - a DB blip: try again next period
                log.warning("lease renewal for %s failed: %s", job_id, exc)

    # ---- partition tasks ---------------------------------------------------------------------

    async def _partition(self, tp: TopicPartition, records: list) -> None:
        """Batch drain: every record of this poll runs at once (their chunks share Triton's batches,
        bounded by the in-flight semaphore); the offset moves past the batch only when every
        outcome in it is durable. A failure leaves the whole batch uncommitted: redelivered
        records of finished jobs are no-ops."""
        assert self.consumer is not None
        tasks = [asyncio.create_task(self.handle(rec.value)) for rec in records]
        await gather_or_cancel(tasks)
        await self._commit(tp, records[-1].offset + 1)

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        """Commit, riding out a broker restart. If the partition was taken from us meanwhile, the
        new owner gets the message again and finds the job finished (the effect is idempotent)."""
        assert self.consumer is not None
        delay = 0.5
        while True:
            try:
                await self.consumer.commit({tp: OffsetAndMetadata(offset, "")})
                return
            except (CommitFailedError, IllegalStateError) as exc:
                log.warning("commit %s@%d dropped (partition reassigned): %s", tp, offset, exc)
                return
            except KafkaError as exc:
                if tp not in self.consumer.assignment():
                    log.warning("commit %s@%d dropped (partition no longer ours): %s", tp, offset, exc)
                    return
                log.warning("commit %s@%d failed (%s); retrying in %.1fs", tp, offset, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _done(self, tp: TopicPartition, task: asyncio.Task) -> None:
        if self.tasks.get(tp) is task:
            del self.tasks[tp]
        if task.cancelled():
            return
        if exc := task.exception():
            log.error("partition %s task failed: %r; its uncommitted messages will be redelivered", tp, exc)
            # Seek back so this process retries the uncommitted message instead of skipping it.
            if self.consumer is not None and tp in self.consumer.assignment():
                asyncio.get_running_loop().create_task(self._rewind(tp))
            return
        if self.consumer is not None and tp in self.consumer.assignment() and not self.stopping.is_set():
            self.consumer.resume(tp)

    async def _rewind(self, tp: TopicPartition) -> None:
        assert self.consumer is not None
        delay = 1.0
        while not self.stopping.is_set():
            await asyncio.sleep(delay)
            if tp not in self.consumer.assignment() or tp in self.tasks:
                return  # revoked meanwhile: the next owner starts from the committed offset
            try:
                committed = await self.consumer.committed(tp)
                if committed is not None:
                    self.consumer.seek(tp, committed)
                else:
                    await self.consumer.seek_to_beginning(tp)
                self.consumer.resume(tp)
                return
            except (KafkaError, IllegalStateError) as exc:  # broker away: keep the partition paused, try again
                log.warning("rewind of %s failed (%s); retrying", tp, exc)
                delay = min(delay * 2, 10.0)

    async def abandon(self, tps: list[TopicPartition]) -> None:
        tasks = [self.tasks.pop(tp) for tp in tps if tp in self.tasks]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run(self) -> None:
        self.consumer = kafka.make_consumer(
            self.s,
            group_id=self.s.group_id,
            client_id=f"worker-{self.owner}",
            session_timeout_ms=self.s.session_timeout_ms,
            heartbeat_interval_ms=self.s.session_timeout_ms // 5,
            max_poll_interval_ms=self.s.max_poll_interval_ms,
            max_poll_records=self.s.max_poll_records,
        )
        self.consumer.subscribe([kafka.JOBS, kafka.JOBS_RETRY], listener=Rebalance(self))
        await self.consumer.start()
        self.running = True
        log.info("worker %s consuming %s, %s", self.owner, kafka.JOBS, kafka.JOBS_RETRY)
        try:
            while not self.stopping.is_set():
                batch = await self.consumer.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    if not records:
                        continue
                    self.consumer.pause(tp)
                    task = asyncio.create_task(
                        self._partition(tp, records), name=f"partition-{tp.topic}-{tp.partition}"
                    )
                    self.tasks[tp] = task
                    task.add_done_callback(lambda t, tp=tp: self._done(tp, t))
            await self._drain()
        finally:
            self.running = False
            await self.consumer.stop()  # leaves the group, so partitions move at once

    async def _drain(self) -> None:
        assert self.consumer is not None
        pending = list(self.tasks.values())
        if pending:
            log.info("draining %d partition task(s) for up to %.0fs", len(pending), self.s.drain_timeout_s)
            self.consumer.pause(*self.consumer.assignment())

            async def keep_polling() -> None:
                # Keep the group membership alive while jobs finish.
                while True:
                    await self.consumer.getmany(timeout_ms=200)

            poller = asyncio.create_task(keep_polling())
            _, not_done = await asyncio.wait(pending, timeout=self.s.drain_timeout_s)
            for t in not_done:
                t.cancel()  # releases the job's lease; its offset stays uncommitted
            await asyncio.gather(*pending, return_exceptions=True)
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
