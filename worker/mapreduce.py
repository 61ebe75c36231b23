"""Map-reduce summarization of one long document, checkpointed chunk by chunk.

map:    the document is chunked by real token counts on sentence boundaries; every chunk is
        summarized (calls run concurrently, so Triton batches chunks of this and other jobs).
reduce: chunk summaries are packed into groups that fit one window and summarized again, level
        by level, until one group remains; that one gets the final summary budget.
Every finished call is checkpointed (job, level, index, input hash): a restarted job redoes none.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from common.aio import gather_or_cancel
from common.chunking import ReducePlan, chunk_text, join_for_reduce
from common.schemas import JobStatus
from common.tokenization import TokenCounter
from common.triton_client import SummarizerClient, TritonFailure
from worker.jobstate import Cancelled, JobStore

log = logging.getLogger(__name__)

TRANSIENT = {"unavailable", "overloaded", "deadline", "internal"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class FairSlots:
    """At most ``limit`` holders at a time; waiters are served round-robin by tenant (FIFO within
    a tenant), so a tenant with one call waiting gets the next free slot after at most one call
    of each other waiting tenant, however many calls those tenants have queued.

    A FIFO semaphore (what this replaces) serves calls in arrival order: a one-chunk job that
    arrives behind another tenant's book waits for every chunk of the book queued before it.
    Hand-written: asyncio, anyio and aiolimiter have counting and rate limiters, none with
    per-key round-robin queues.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        # tenant → its waiters; the order of the keys is the round-robin order.
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    @asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[None]:
        await self._acquire(tenant)
        try:
            yield
        finally:
            self.busy -= 1
            self._wake()

    async def _acquire(self, tenant: str) -> None:
        if self.busy < self.limit and not self._waiting:
            self.busy += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(tenant, deque()).append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # The slot was handed over just as we were cancelled: pass it on.
                self.busy -= 1
                self._wake()
            else:
                q = self._waiting.get(tenant)
                if q is not None and fut in q:
                    q.remove(fut)
                    if not q:
                        del self._waiting[tenant]
            raise

    def _wake(self) -> None:
        while self.busy < self.limit and self._waiting:
            tenant, q = next(iter(self._waiting.items()))
            fut = q.popleft()
            if q:
                self._waiting.move_to_end(tenant)  # this tenant had its turn: to the back
            else:
                del self._waiting[tenant]
            if fut.done():  # cancelled while queued
                continue
            self.busy += 1
            fut.set_result(None)


class InvalidDocument(ValueError):
    """A document the job cannot summarize; the message is written for the client (it becomes
    the job's error.detail, worker/runner.py client_reason)."""


class ModelCaller:
    """Bounded, retried calls to Triton shared by every job of this worker; the bound is shared
    fairly between tenants (:class:`FairSlots`)."""

    def __init__(self, client: SummarizerClient, max_in_flight: int, timeout_s: float, retries: int) -> None:
        self.client = client
        self.slots = FairSlots(max_in_flight)
        self.timeout_s = timeout_s
        self.retries = retries

    async def summarize(self, text: str, max_tokens: int, language: str, tenant: str = "") -> str:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.retries),
            wait=wait_exponential(multiplier=0.5, max=4),
            retry=retry_if_exception(lambda e: isinstance(e, TritonFailure) and e.kind in TRANSIENT),
            reraise=True,
        ):
            with attempt:
                async with self.slots.slot(tenant):
                    res = await self.client.summarize(text, max_tokens, language, timeout_s=self.timeout_s)
                return res.summary.strip()
        raise AssertionError("unreachable")


async def summarize_document(
    *,
    job_id: str,
    document: str,
    language: str,
    tenant: str = "",
    final_tokens: int,
    store: JobStore,
    model: ModelCaller,
    counter: TokenCounter,
    chunk_tokens: int,
    chunk_summary_tokens: int,
    is_cancelled: Callable[[], bool] = lambda: False,
) -> tuple[str, int]:
    """Returns (summary, number of model calls planned = chunks_total)."""
    # Chunking a multi-MB document is CPU work: keep it off the event loop (heartbeats, polls).
    chunks = await asyncio.to_thread(chunk_text, document, counter.tokenizer, chunk_tokens)
    if not chunks:
        raise InvalidDocument("document has no text to summarize")
    # The levels and the planned calls (chunks_total) come from the plan the dry-run estimate
    # uses too (common/chunking.py ReducePlan): it grows as reduce levels are added.
    plan = ReducePlan(len(chunks), chunk_tokens)
    done = 0

    async def run_level(level: int, inputs: list[str], max_tokens: int) -> list[str]:
        nonlocal done
        saved = await store.checkpoints(job_id, level)
        out: list[str | None] = [None] * len(inputs)
        for i, text in enumerate(inputs):
            hit = saved.get(i)
            if hit and hit[0] == sha(text):
                out[i] = hit[1]
        reused = sum(1 for o in out if o is not None)
        if reused:
            log.info("job %s level %d: %d/%d calls reused from checkpoints", job_id, level, reused, len(inputs))
        done += reused
        await store.set_total(job_id, plan.calls, done)

        async def one(i: int) -> None:
            nonlocal done
            if is_cancelled():
                raise Cancelled(job_id)
            summary = await model.summarize(inputs[i], max_tokens, language, tenant)
            if not summary:
                summary = inputs[i][:400]  # the model returned nothing: keep the text, never drop it
            status = await store.save_chunk(job_id, level, i, sha(inputs[i]), summary)
            done += 1
            out[i] = summary
            if status == JobStatus.cancelling:
                raise Cancelled(job_id)

        todo = [i for i, o in enumerate(out) if o is None]
        tasks = [asyncio.create_task(one(i)) for i in todo]
        await gather_or_cancel(tasks)
        return [o or "" for o in out]

    if plan.final:
        [summary] = await run_level(0, chunks, final_tokens)
        return summary, plan.calls

    summaries = await run_level(0, chunks, chunk_summary_tokens)
    while True:
        counts = await asyncio.to_thread(counter.count_many, summaries)
        fan_in = plan.next_level(counts)  # raises ReduceDidNotConverge past MAX_REDUCE_LEVELS
        groups = join_for_reduce(summaries, fan_in)
        if plan.final:
            [summary] = await run_level(plan.level, groups, final_tokens)
            return summary, plan.calls
        summaries = await run_level(plan.level, groups, chunk_summary_tokens)
