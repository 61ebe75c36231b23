"""Property-based tests of the job state machine (common/store/transitions.py) on real SQLite and
PostgreSQL: random interleavings of claim, cancel, finish, fail, retry, lease expiry and worker
crashes, with several operations racing in each step, never give a job two terminal states or
two terminal events, never run it more than ``max_attempts`` times, and a redelivery afterwards
always brings it to exactly one terminal state."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from async_svc.jobs import create_job
from common import topics
from common.schemas import TERMINAL_STATES, JobMessage, JobStatus
from common.store import Database, Job, OutboxMessage
from common.store.transitions import ALLOWED, JobTransitions, Lease, LeaseLost, RetryPolicy

pytestmark = pytest.mark.integration

# Examples per backend (the `db` fixture runs each test on SQLite and on PostgreSQL).
EXAMPLES = int(os.environ.get("PRECIS_HYPOTHESIS_EXAMPLES", "200"))

WORKERS = {"a": Lease.of("worker-a", 30), "b": Lease.of("worker-b", 30)}
POLICY = RetryPolicy(max_attempts=3, backoff_s=0.0, backoff_max_s=0.0)

OPS = [
    "claim_a",
    "claim_b",
    "cancel",  # the API's DELETE
    "succeed_a",
    "succeed_b",
    "fail_a",  # a failed attempt, as the worker settles it: retry or fail (RetryPolicy)
    "fail_b",
    "fail_permanent_a",  # invalid input: fail at once
    "retry_b",  # schedule_retry on its own
    "renew_a",
    "release_a",  # rebalance / shutdown
    "progress_b",  # a checkpoint write (lease-guarded, no status change)
    "expire",  # time passes: every lease runs out (a worker died)
    "settle",  # a redelivery sees cancelling and finishes the cancel
    "crash_a",  # claim, then the worker is SIGKILLed: no except clause runs, the lease runs out
    "crash_b",
]
# Each step runs its operations concurrently (asyncio.gather on the pool's connections).
STEPS = st.lists(st.lists(st.sampled_from(OPS), min_size=1, max_size=3), min_size=1, max_size=8)


def test_terminal_states_have_no_way_out():
    assert set(ALLOWED) == set(JobStatus)
    for status in TERMINAL_STATES:
        assert ALLOWED[status] == frozenset()
    for status in set(JobStatus) - TERMINAL_STATES:
        assert ALLOWED[status], status


async def _new_job(db: Database) -> tuple[Job, JobMessage]:
    job, _ = await create_job(
        db,
        tenant="t1",
        text="A document. " * 5,
        max_summary_tokens=None,
        language="auto",
        notify=None,
        metadata=None,
        idempotency_key=None,
    )
    msg = JobMessage(job_id=job.id, tenant="t1", params=job.params, enqueued_at=datetime.now(UTC))
    return job, msg


async def _expire(db: Database, job_id: str) -> None:
    async with db.transaction() as s:
        await s.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner.is_not(None))
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )


async def _op(sm: JobTransitions, db: Database, name: str, job_id: str, msg: JobMessage) -> None:
    kind, _, who = name.rpartition("_") if name[-2:] in ("_a", "_b") else (name, "", "")
    lease = WORKERS.get(who) if who else None
    try:
        if kind == "claim":
            assert lease is not None
            await sm.claim(job_id, lease, POLICY.max_attempts)  # as the worker claims
        elif kind == "crash":
            assert lease is not None
            if await sm.claim(job_id, lease, POLICY.max_attempts) is not None:
                await _expire(db, job_id)  # the dead worker renews nothing
        elif name == "cancel":
            await sm.request_cancel(job_id, "t1")
        elif kind == "succeed":
            assert lease is not None
            await sm.succeed(job_id, lease, "summary", 2)
        elif kind in ("fail", "fail_permanent"):
            assert lease is not None
            job = await sm.load(job_id)
            assert job is not None
            await sm.fail_or_retry(msg, lease, POLICY, job.attempts, "boom", permanent=kind == "fail_permanent")
        elif kind == "retry":
            assert lease is not None
            await sm.schedule_retry(job_id, lease, msg, "boom", 0.0)
        elif kind == "renew":
            assert lease is not None
            await sm.renew(job_id, lease)
        elif kind == "release":
            assert lease is not None
            await sm.release(job_id, lease)
        elif kind == "progress":
            assert lease is not None
            async with db.transaction() as s:
                await sm.guarded(s, job_id, lease, chunks_done=Job.chunks_done + 1)
        elif name == "expire":
            await _expire(db, job_id)
        elif name == "settle":
            await sm.settle_cancel(job_id)
        else:
            raise AssertionError(name)
    except LeaseLost:
        pass  # a worker whose lease moved on: it writes nothing, which is the point


async def _observe(db: Database, job_id: str) -> tuple[Job, Counter]:
    async with db.session() as s:
        job = await s.get(Job, job_id)
        # Job messages are keyed by tenant (fair partitioning), events by job: match the value.
        rows = [r for r in (await s.execute(select(OutboxMessage))).scalars().all() if r.value.get("job_id") == job_id]
    assert job is not None
    per = Counter(r.topic for r in rows)
    per.update(f"event:{r.value['type']}" for r in rows if r.topic == topics.EVENTS)
    return job, per


def _check(job: Job, out: Counter, seen_terminal: JobStatus | None) -> None:
    status = job.status
    if seen_terminal is not None:
        assert status == seen_terminal, f"terminal {seen_terminal} became {status}"
    if status.terminal:
        assert out[topics.EVENTS] == 1, out
        assert out[f"event:job.{status.value}"] == 1, out
        assert job.lease_owner is None and job.finished_at is not None
    else:
        assert out[topics.EVENTS] == 0, out
        assert job.finished_at is None
    assert out[topics.JOBS_DLQ] == (1 if status == JobStatus.failed else 0), out
    assert out[topics.JOBS] == 1
    # Every claim counts an attempt, crashed runs too, and none goes past the limit.
    assert job.attempts <= POLICY.max_attempts, job.attempts
    if status in (JobStatus.running, JobStatus.cancelling):
        assert job.lease_owner is not None
    if status == JobStatus.queued:
        assert job.lease_owner is None


async def _redeliver(sm: JobTransitions, db: Database, job_id: str) -> None:
    """What the last delivery of the job's message does, once every lease has run out."""
    final = Lease.of("worker-final", 30)
    for _ in range(5):
        await _expire(db, job_id)
        status = await sm.status(job_id)
        assert status is not None
        if status.terminal:
            return
        if status == JobStatus.cancelling:
            await sm.settle_cancel(job_id)
        elif await sm.claim(job_id, final, POLICY.max_attempts) is not None:
            if not await sm.succeed(job_id, final, "summary", 2):
                await sm.settle_cancel(job_id)
    raise AssertionError(f"job {job_id} not terminal after redeliveries: {await sm.status(job_id)}")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS)
async def test_random_interleavings_reach_one_terminal_state_with_one_event(db, steps):
    sm = JobTransitions(db)
    job, msg = await _new_job(db)
    seen: JobStatus | None = None
    for step in steps:
        await asyncio.gather(*(_op(sm, db, name, job.id, msg) for name in step))
        current, out = await _observe(db, job.id)
        _check(current, out, seen)
        if current.status.terminal:
            seen = current.status
    await _redeliver(sm, db, job.id)
    current, out = await _observe(db, job.id)
    _check(current, out, seen)
    assert current.status.terminal


@settings(
    max_examples=max(EXAMPLES // 4, 10),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    claimed=st.booleans(),
    racers=st.lists(st.sampled_from(["claim_a", "claim_b", "cancel", "succeed_a", "fail_b", "expire"]), max_size=6),
)
async def test_a_cancel_that_answers_never_leaves_the_job_running(db, claimed, racers):
    """The API's cancel racing claims, finishes and retries (e2e found a 200 with status
    "running"): its answer is cancelled or cancelling unless the job had already finished, and
    the job is never left queued or running afterwards."""
    sm = JobTransitions(db)
    job, msg = await _new_job(db)
    if claimed:
        assert await sm.claim(job.id, WORKERS["a"], POLICY.max_attempts) is not None
    results = await asyncio.gather(sm.request_cancel(job.id, "t1"), *(_op(sm, db, r, job.id, msg) for r in racers))
    _, after = results[0]
    assert after is not None
    assert after.status in (JobStatus.cancelled, JobStatus.cancelling) or after.status.terminal, after.status
    current, out = await _observe(db, job.id)
    assert current.status not in (JobStatus.queued, JobStatus.running), current.status
    _check(current, out, None)


async def test_a_job_that_crashes_every_worker_ends_failed_with_one_event(db):
    """A job that kills its worker (SIGKILL, OOM) on every run: each claim counts, and the claim
    after ``max_attempts`` runs fails it, with one job.failed event and one dead letter, instead
    of running it again forever (attempts grew only in the except path)."""
    sm = JobTransitions(db)
    job, _ = await _new_job(db)
    for n in range(POLICY.max_attempts):
        lease = Lease.of(f"worker-{n}", 30)
        claimed = await sm.claim(job.id, lease, POLICY.max_attempts)
        assert claimed is not None and claimed.attempts == n + 1
        await _expire(db, job.id)  # the worker died mid-job; its lease runs out
    assert await sm.claim(job.id, Lease.of("worker-last", 30), POLICY.max_attempts) is None
    current, out = await _observe(db, job.id)
    assert current.status == JobStatus.failed
    assert current.error_type == "attempts_exhausted"
    assert f"gave up after {POLICY.max_attempts} attempts" in (current.error_detail or "")
    assert out["event:job.failed"] == 1 and out[topics.EVENTS] == 1, out
    assert out[topics.JOBS_DLQ] == 1, out
    _check(current, out, JobStatus.failed)
    # A later redelivery finds it finished and changes nothing.
    assert await sm.claim(job.id, Lease.of("worker-late", 30), POLICY.max_attempts) is None
    assert (await _observe(db, job.id))[1] == out


async def test_a_live_lease_is_not_failed_by_an_exhausted_claim(db):
    """Out of attempts but still running under a live lease (a duplicate delivery): the claim
    neither takes the job nor fails it; the running worker settles it."""
    sm = JobTransitions(db)
    job, _ = await _new_job(db)
    for n in range(POLICY.max_attempts - 1):
        assert await sm.claim(job.id, Lease.of(f"worker-{n}", 30), POLICY.max_attempts) is not None
        await _expire(db, job.id)
    owner = Lease.of("worker-owner", 30)
    assert await sm.claim(job.id, owner, POLICY.max_attempts) is not None  # the last attempt, live
    assert await sm.claim(job.id, Lease.of("worker-dup", 30), POLICY.max_attempts) is None
    assert await sm.status(job.id) == JobStatus.running
    assert await sm.succeed(job.id, owner, "summary", 2)


async def test_runs_given_back_on_a_rebalance_spend_no_attempt(db):
    """A rebalance or a drain gives the job back (release): that run is not a failed attempt, so
    however many times partitions move, the job still runs; crashed runs are what count."""
    sm = JobTransitions(db)
    job, _ = await _new_job(db)
    for n in range(POLICY.max_attempts * 2):
        lease = Lease.of(f"worker-{n}", 30)
        claimed = await sm.claim(job.id, lease, POLICY.max_attempts)
        assert claimed is not None and claimed.attempts == 1, n
        await sm.release(job.id, lease)
    last = Lease.of("worker-last", 30)
    assert await sm.claim(job.id, last, POLICY.max_attempts) is not None
    assert await sm.succeed(job.id, last, "summary", 2)
