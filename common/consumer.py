"""The Kafka consumer loop shared by the worker and the notifier, parameterised by a handler.

Pattern (after aiokafka's concurrent-consumption example): one task per partition with work; that
partition is paused while its task runs, and the main loop keeps calling ``getmany`` so heartbeats
and the max-poll-interval are honoured however long a handler takes. A partition's offset is
committed only after the handler returned, i.e. once its effects are durable (manual commits,
at-least-once delivery; handlers must be idempotent). A failed handler leaves its records
uncommitted and the partition is rewound to the committed offset, so they are retried here.
A rebalance listener cancels the tasks of revoked partitions; ``stopping`` (SIGTERM) drains
(let running handlers finish for a while, cancel the rest, leave the group).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

log = logging.getLogger(__name__)

# The records of one partition from one poll; returns once their effects are durable.
BatchHandler = Callable[[TopicPartition, list[ConsumerRecord]], Awaitable[None]]


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: ConsumerLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked) -> None:
        # Stop the handlers of partitions we lose (the worker's release their jobs' leases, so
        # the new owner starts at once, from the checkpoints). Their offsets stay uncommitted.
        if revoked:
            log.info("revoked %s", sorted(f"{tp.topic}:{tp.partition}" for tp in revoked))
        await self.loop.abandon([tp for tp in revoked if tp in self.loop.tasks])

    async def on_partitions_assigned(self, assigned) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))


class ConsumerLoop:
    """Runs ``handler`` for each partition's records; ``consumer`` is made by
    :func:`common.kafka.make_consumer` (manual commits) without topics: the loop subscribes."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topics: Sequence[str],
        handler: BatchHandler,
        *,
        drain_timeout_s: float,
        poll_timeout_ms: int = 500,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self.consumer = consumer
        self.topics = list(topics)
        self.handler = handler
        self.drain_timeout_s = drain_timeout_s
        self.poll_timeout_ms = poll_timeout_ms
        self.tasks: dict[TopicPartition, asyncio.Task] = {}
        self.stopping = stopping or asyncio.Event()  # set it (SIGTERM) to drain and leave
        self.running = False

    async def run(self) -> None:
        self.consumer.subscribe(self.topics, listener=_Rebalance(self))
        await self.consumer.start()
        self.running = True
        try:
            while not self.stopping.is_set():
                batch = await self.consumer.getmany(timeout_ms=self.poll_timeout_ms)
                for tp, records in batch.items():
                    if not records:
                        continue
                    self.consumer.pause(tp)
                    task = asyncio.create_task(
                        self._partition(tp, records), name=f"partition-{tp.topic}-{tp.partition}"
                    )
                    self.tasks[tp] = task
                    task.add_done_callback(functools.partial(self._done, tp))
            await self._drain()
        finally:
            self.running = False
            await self.consumer.stop()  # leaves the group, so partitions move at once

    async def _partition(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        await self.handler(tp, records)
        await self.commit(tp, records[-1].offset + 1)

    async def commit(self, tp: TopicPartition, offset: int) -> None:
        """Commit, riding out a broker restart. If the partition was taken from us meanwhile, the
        new owner gets the records again and finds their effects done (handlers are idempotent)."""

        def retryable(exc: BaseException) -> bool:
            # A reassigned partition's commit is refused for good; other broker errors pass.
            if isinstance(exc, CommitFailedError | IllegalStateError):
                return False
            return isinstance(exc, KafkaError) and tp in self.consumer.assignment()

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning("commit %s@%d failed (%s); retrying in %.1fs", tp, offset, exc, wait)

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(retryable),
                wait=wait_exponential(multiplier=0.5, max=5.0),
                before_sleep=before_sleep,
                reraise=True,
            ):
                with attempt:
                    await self.consumer.commit({tp: OffsetAndMetadata(offset, "")})
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("commit %s@%d dropped (partition reassigned): %s", tp, offset, exc)
        except KafkaError as exc:
            log.warning("commit %s@%d dropped (partition no longer ours): %s", tp, offset, exc)

    def _done(self, tp: TopicPartition, task: asyncio.Task) -> None:
        if self.tasks.get(tp) is task:
            del self.tasks[tp]
        if task.cancelled():
            return
        if exc := task.exception():
            log.error("partition %s task failed: %r; its uncommitted messages will be redelivered", tp, exc)
            # Seek back so this process retries the uncommitted message instead of skipping it.
            if tp in self.consumer.assignment():
                asyncio.get_running_loop().create_task(self._rewind(tp))
            return
        if tp in self.consumer.assignment() and not self.stopping.is_set():
            self.consumer.resume(tp)

    async def _rewind(self, tp: TopicPartition) -> None:
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

    async def _drain(self) -> None:
        pending = list(self.tasks.values())
        if not pending:
            return
        log.info("draining %d partition task(s) for up to %.0fs", len(pending), self.drain_timeout_s)
        self.consumer.pause(*self.consumer.assignment())

        async def keep_polling() -> None:
            # Keep the group membership alive while handlers finish.
            while True:
                await self.consumer.getmany(timeout_ms=200)

        poller = asyncio.create_task(keep_polling())
        _, not_done = await asyncio.wait(pending, timeout=self.drain_timeout_s)
        for t in not_done:
            t.cancel()  # the worker's handler releases the job's lease; its offset stays uncommitted
        await asyncio.gather(*pending, return_exceptions=True)
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
