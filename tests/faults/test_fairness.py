"""Fair sharing between tenants and crash-proof attempt limits, on the real stack (a real worker,
real Triton with short model calls, real Kafka, the store): runs under `make test-faults` (and the
shared lock). This file sorts before test_faults.py, whose last test stops Triton for good."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from aiokafka.partitioner import DefaultPartitioner

from devstack import wait_until
from tests.faults.conftest import WORKER_ENV, FaultStack, doc

pytestmark = pytest.mark.faults


def _partition(key: str, n: int) -> int:
    parts = list(range(n))
    return DefaultPartitioner()(key.encode(), parts, parts)


def _tenants(n_partitions: int = 6) -> tuple[str, str]:
    """Two tenant names whose job messages (keyed by tenant) land on different partitions: the
    test measures the worker's scheduling, not a hash collision."""
    a = "fair-book"
    b = next(
        f"fair-note-{i}"
        for i in range(100)
        if _partition(f"fair-note-{i}", n_partitions) != _partition(a, n_partitions)
    )
    return a, b


def _submit(stack: FaultStack, tenant: str, text: str) -> str:
    r = stack.http.post("/internal/jobs", json={"text": text, "max_summary_tokens": 16}, auth=stack.as_tenant(tenant))
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _t(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_a_paragraph_is_not_starved_by_another_tenants_books(stack: FaultStack):
    """Tenant A submits four ~10-chunk jobs; once they are all running (their ~40 map calls
    queued at the worker's 4 in-flight slots), tenant B submits a one-chunk job. B must finish
    before every one of A's jobs, and only a bounded number of A's model calls may be served
    while B waits: the slots are shared round-robin between tenants. With one FIFO semaphore
    (and job-id keys, which may put B's job behind one of A's on a partition) B's call queued
    behind every A call already waiting."""
    in_flight = int(WORKER_ENV["PRECIS_MAX_IN_FLIGHT_CALLS"])
    tenant_a, tenant_b = _tenants()
    books = [_submit(stack, tenant_a, doc(40 + i, 900)) for i in range(4)]
    # The worker starts once the books are published, so its first poll takes all four (one
    # partition's records run together); started earlier, it would run the first book alone and
    # poll the rest only when that batch is done.
    wait_until(
        lambda: not stack.sql("SELECT id FROM outbox WHERE topic = 'precis.jobs' AND published_at IS NULL"),
        30,
        "the books' messages published",
    )
    stack.start_worker()
    deadline = time.monotonic() + 180
    while True:  # every book chunked and its map calls queued
        rows = stack.jobs(books)
        assert not any(r["status"] in ("succeeded", "failed") for r in rows.values()), "a book finished early"
        if all(r["status"] == "running" and r["chunks_total"] > 1 for r in rows.values()):
            break
        assert time.monotonic() < deadline, {i: (r["status"], r["chunks_total"]) for i, r in rows.items()}
        time.sleep(0.2)
    planned = sum(r["chunks_total"] for r in rows.values())
    assert planned >= 30, f"A's books plan only {planned} calls: too few to measure starvation"
    note = _submit(stack, tenant_b, doc(60, 60))
    rows = stack.wait_terminal([*books, note], 600)
    assert all(r["status"] == "succeeded" for r in rows.values()), {i: r["status"] for i, r in rows.items()}
    b = rows[note]
    assert b["chunks_total"] == 1
    # Ordering: B finished before each of A's jobs.
    late = [i for i in books if _t(rows[i]["finished_at"]) <= _t(b["finished_at"])]
    assert not late, f"{len(late)} of A's jobs finished before B's one-chunk job"
    # And while B waited (from its claim to its one call's checkpoint), few A calls were served.
    [b_chunk] = stack.sql("SELECT created_at FROM chunk_results WHERE job_id = ?", note)
    marks = ",".join("?" * len(books))
    a_chunks = [
        _t(r["created_at"])
        for r in stack.sql(f"SELECT created_at FROM chunk_results WHERE job_id IN ({marks})", *books)
    ]
    served_meanwhile = sum(_t(b["started_at"]) <= t <= _t(b_chunk["created_at"]) for t in a_chunks)
    served_before = sum(t <= _t(b_chunk["created_at"]) for t in a_chunks)
    print(f"A calls: {len(a_chunks)}; served before B's call {served_before}, while B waited {served_meanwhile}")
    assert served_meanwhile <= 3 * in_flight, (
        f"{served_meanwhile} of A's model calls were served while B's one call waited "
        f"(round-robin bound: about {in_flight} in flight + {in_flight} beside it)"
    )


def test_a_job_that_kills_its_worker_every_time_ends_failed(stack: FaultStack):
    """Each run of the job ends with its worker SIGKILLed (no except clause runs: today's OOM
    kill). After PRECIS_MAX_ATTEMPTS runs, the next claim fails it: status failed, one job.failed
    event, one dead letter, one email, instead of a crash loop that never ends."""
    max_attempts = 2
    env = {"PRECIS_MAX_ATTEMPTS": str(max_attempts)}
    stack.start_worker(**env)
    job = stack.submit(doc(70, 900))
    kills = 0
    deadline = time.monotonic() + 300
    while kills < max_attempts:
        assert time.monotonic() < deadline, f"could not catch the job mid-way {max_attempts} times"
        row = stack.jobs([job])[job]
        assert row["status"] in ("queued", "running"), dict(row)
        owner = (row["lease_owner"] or "").rsplit("-", 2)
        w = stack.worker_by_pid(int(owner[1])) if len(owner) == 3 else None
        if row["status"] == "running" and row["chunks_done"] >= 1 and w is not None and row["attempts"] == kills + 1:
            print(f"kill {kills + 1}: {w.name} at {row['chunks_done']}/{row['chunks_total']}")
            w.kill()
            kills += 1
            stack.start_worker(wait=False, **env)
        time.sleep(0.2)
    rows = stack.wait_terminal([job], 240)
    r = rows[job]
    assert r["status"] == "failed", dict(r)
    assert r["error_type"] == "attempts_exhausted"
    assert r["attempts"] == max_attempts
    assert f"gave up after {max_attempts} attempts" in r["error_detail"]
    assert stack.view(job)["error"]["type"] == "attempts_exhausted"
    stack.assert_exactly_once([job], expect="failed")
    dlq = [m for m in stack.topic("precis.jobs.dlq") if m["job_id"] == job]
    assert len(dlq) == 1 and "gave up" in dlq[0]["last_error"]
