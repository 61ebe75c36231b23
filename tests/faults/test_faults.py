"""Fault injection on the real stack (make test-faults): every job finishes exactly once.

Order matters only for cost: Triton is stopped for good by the last test.
"""

from __future__ import annotations

import re
import signal
import time
import uuid

import httpx
import pytest

from devstack import port_open, wait_until
from tests.faults.conftest import FaultStack, doc

pytestmark = pytest.mark.faults


def owner_pid(owner: str | None) -> int | None:
    # lease_owner = "<hostname>-<pid>-<hex>"
    if not owner:
        return None
    return int(owner.rsplit("-", 2)[1])


def test_async_svc_killed_between_commit_and_publish(stack: FaultStack):
    # No worker yet: its outbox relay would publish pending rows too (any relay may publish any
    # row), and here async_svc's relay must be the only one.
    # 1) SIGKILL right after the commit, before the outbox relay could publish (it only polls hourly
    #    here, so nothing but the kill decides). The client sees the connection drop.
    stack.async_svc.stop()
    svc = stack.start_async(PRECIS_FAULT_INJECT="crash_after_commit", PRECIS_OUTBOX_POLL_S="3600")
    key_after = f"after-{uuid.uuid4()}"
    with pytest.raises(httpx.TransportError):
        stack.submit(doc(1), key_after)
    wait_until(lambda: not svc.alive(), 10, "async_svc killed")
    [job] = stack.sql("SELECT id, status FROM jobs WHERE idempotency_key = ?", key_after)
    assert job["status"] == "queued"
    # job messages are keyed by tenant (common/store/transitions.py jobs_key): find it by its body
    pending = stack.sql(
        "SELECT id FROM outbox WHERE topic = 'precis.jobs' AND json_extract(value, '$.job_id') = ? "
        "AND published_at IS NULL",
        job["id"],
    )
    assert len(pending) == 1, "the job's message must wait in the outbox"
    assert not [m for m in stack.topic("precis.jobs") if m["job_id"] == job["id"]]

    # 2) SIGKILL inside the transaction, before the commit: nothing may survive.
    svc = stack.start_async(PRECIS_FAULT_INJECT="crash_before_commit", PRECIS_OUTBOX_POLL_S="3600")
    key_before = f"before-{uuid.uuid4()}"
    with pytest.raises(httpx.TransportError):
        stack.submit(doc(2), key_before)
    wait_until(lambda: not svc.alive(), 10, "async_svc killed")
    assert stack.sql("SELECT id FROM jobs WHERE idempotency_key = ?", key_before) == []

    # 3) A normal restart: the relay publishes the committed job; the clients retry with their keys.
    stack.start_async()
    wait_until(
        lambda: [m for m in stack.topic("precis.jobs") if m["job_id"] == job["id"]],
        30,
        "the committed job published after the restart",
    )
    stack.start_worker()
    again = stack.submit(doc(1), key_after)
    assert again == job["id"], "same Idempotency-Key + same body must give the same job"
    r = stack.http.post(
        "/internal/jobs", json={"text": doc(3), "max_summary_tokens": 16}, headers={"Idempotency-Key": key_after}
    )
    assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json")
    second = stack.submit(doc(2), key_before)
    ids = [job["id"], second]
    stack.wait_terminal(ids, 180)
    stack.assert_exactly_once(ids)
    for key in (key_after, key_before):
        assert len(stack.sql("SELECT id FROM jobs WHERE idempotency_key = ?", key)) == 1
    # No ghost: every job message on precis.jobs names a job that exists, and each of ours once.
    msgs = stack.topic("precis.jobs")
    known = {r["id"] for r in stack.sql("SELECT id FROM jobs")}
    assert {m["job_id"] for m in msgs} <= known
    assert sum(m["job_id"] in ids for m in msgs) == 2


def test_sigkill_worker_mid_job_five_times(stack: FaultStack):
    """Two workers; five times, SIGKILL the one running a half-done job and start a new one.
    Every crashed run spends one of the job's attempts (the claim counts it), and one job may be
    hit by several kills: the attempt limit here is above the number of kills, so all succeed."""
    env = {"PRECIS_MAX_ATTEMPTS": "8"}
    stack.start_worker(**env)
    stack.start_worker(**env)
    calls0 = stack.triton_metric("nv_inference_request_success")
    ids = [stack.submit(doc(10 + i, 900)) for i in range(4)]
    kills = 0
    killed_at: dict[str, int] = {}  # job -> chunks_done when its worker was last killed
    deadline = time.monotonic() + 400
    while kills < 5:
        assert time.monotonic() < deadline, "could not catch a job mid-way five times"
        rows = stack.jobs(ids)
        # A victim: a running job that made progress under its current worker since its last kill.
        victims = [
            r
            for r in rows.values()
            if r["status"] == "running"
            and 0 < r["chunks_done"] < r["chunks_total"] - 1
            and r["chunks_done"] > killed_at.get(r["id"], 0)
            and stack.worker_by_pid(owner_pid(r["lease_owner"]) or -1) is not None
        ]
        if not victims:
            if not any(r["status"] in ("queued", "running") for r in rows.values()):
                ids.append(stack.submit(doc(20 + len(ids), 900)))  # keep work in flight
            time.sleep(0.3)
            continue
        v = victims[0]
        w = stack.worker_by_pid(owner_pid(v["lease_owner"]))
        assert w is not None
        print(
            f"kill {kills + 1}: {w.name} (pid {w.p.pid}) on job {v['id'][:8]} at {v['chunks_done']}/{v['chunks_total']}"
        )
        w.kill()
        killed_at[v["id"]] = v["chunks_done"]
        kills += 1
        stack.start_worker(wait=False, **env)
    rows = stack.wait_terminal(ids, 400)
    stack.assert_exactly_once(ids)
    assert sum(r["attempts"] > 1 for r in rows.values()) >= 1
    # Checkpoints: a job taken over after a kill resumes from its finished chunks.
    logs = "".join(w.log_path.read_text(errors="replace") for w in stack.workers)
    for job in killed_at:
        assert re.search(rf"job {job} level 0: [1-9][0-9]*/\d+ calls reused from checkpoints", logs), job
    # Waste is bounded by the calls in flight (4 per worker) lost at each kill or rebalance, never
    # a whole job redone per kill.
    calls = stack.triton_metric("nv_inference_request_success") - calls0
    planned = sum(r["chunks_total"] for r in rows.values())
    print(f"model calls {calls:.0f} for {planned} planned, {kills} kills")
    assert calls <= planned + kills * 3 * 4


def test_kafka_broker_restart_under_load(stack: FaultStack):
    stack.start_worker()
    stack.start_worker()
    ids = [stack.submit(doc(40 + i, 250)) for i in range(6)]
    time.sleep(3)
    stack.stop_kafka()
    # Intake keeps working while the broker is away: the jobs wait in the outbox.
    ids += [stack.submit(doc(50 + i, 250)) for i in range(6)]
    time.sleep(5)
    stack.start_kafka()
    ids += [stack.submit(doc(60 + i, 250)) for i in range(4)]
    stack.wait_terminal(ids, 400)
    stack.assert_exactly_once(ids)


def test_job_longer_than_max_poll_interval_is_not_redelivered(stack: FaultStack):
    # One call in flight and a max poll interval of 10 s: the job takes well over 10 s. Sized for
    # margin: 1,000 words took 10.2 s once the llama.cpp engine became the default, so 3,000
    # (~45 one-at-a-time calls, ~30 s here).
    w = stack.start_worker(PRECIS_MAX_POLL_INTERVAL_MS="10000", PRECIS_MAX_IN_FLIGHT_CALLS="1")
    t0 = time.monotonic()
    job = stack.submit(doc(7, 3000))
    progress = set()
    while stack.jobs([job])[job]["status"] not in ("succeeded", "failed"):
        v = stack.view(job)
        progress.add(v["progress"]["chunks_done"])
        assert time.monotonic() - t0 < 400
        time.sleep(0.5)
    took = time.monotonic() - t0
    row = stack.jobs([job])[job]
    print(f"long job took {took:.1f}s, progress seen {sorted(progress)}")
    assert took > 12, "the job must outlive max.poll.interval.ms for this test to mean anything"
    assert row["status"] == "succeeded" and row["attempts"] == 1, dict(row)
    assert len(progress) >= 4, "progress per chunk must be visible while it runs"
    log = w.log_path.read_text()
    assert len(re.findall(rf"job {job}: ", log)) == 1, "the job ran more than once"
    assert log.count("assigned [") == 1 and "revoked [" not in log, "the group rebalanced during the job"
    stack.assert_exactly_once([job])


def test_sigterm_drains_worker(stack: FaultStack):
    """SIGTERM mid-job: the worker finishes or releases, commits and leaves; another one takes over
    at once (no lease expiry wait) and the job completes exactly once."""
    a = stack.start_worker(PRECIS_DRAIN_TIMEOUT_S="2", PRECIS_MAX_IN_FLIGHT_CALLS="1")
    b = stack.start_worker(PRECIS_MAX_IN_FLIGHT_CALLS="2")
    ids = [stack.submit(doc(80 + i, 800), tenant=f"drain-{i}") for i in range(3)]
    deadline = time.monotonic() + 120
    last_submit = time.monotonic()
    while True:
        rows = stack.jobs(ids)
        mine = [
            r
            for r in rows.values()
            if r["status"] == "running" and owner_pid(r["lease_owner"]) == a.p.pid and r["chunks_done"] > 0
        ]
        if mine:
            break
        assert time.monotonic() < deadline, "worker a never ran a job"
        # A job's partition follows from its tenant (the message key), and a owns only half of the
        # partitions: all of the first jobs may land on b's. Keep feeding jobs of other tenants
        # until a holds one mid-way.
        if time.monotonic() - last_submit > 2 and len(ids) < 20:
            ids.append(stack.submit(doc(80 + len(ids), 800), tenant=f"drain-{len(ids)}"))
            last_submit = time.monotonic()
        time.sleep(0.3)
    a.signal(signal.SIGTERM)
    assert a.p.wait(30) == 0, a.tail()
    assert "draining" in a.log_path.read_text()
    assert b.alive()
    stack.wait_terminal(ids, 300)
    stack.assert_exactly_once(ids)


def test_triton_down_30s_jobs_retry_and_succeed(stack: FaultStack):
    stack.start_worker(PRECIS_MAX_ATTEMPTS="10", PRECIS_RETRY_BACKOFF_S="2", PRECIS_RETRY_BACKOFF_MAX_S="12")
    stack.stop_triton()
    t_down = time.monotonic()
    ids = [stack.submit(doc(90 + i, 250)) for i in range(4)]
    time.sleep(30)
    stack.start_triton(wait=False)
    stack.wait_triton()
    print(f"Triton was down {time.monotonic() - t_down:.0f}s (30 s + model load)")
    rows = stack.wait_terminal(ids, 300)
    stack.assert_exactly_once(ids)
    assert all(r["attempts"] > 1 for r in rows.values()), {i: r["attempts"] for i, r in rows.items()}


def test_triton_down_for_good_jobs_fail_after_n_attempts(stack: FaultStack):
    """Last test: Triton stays stopped. After PRECIS_MAX_ATTEMPTS the job fails with a readable
    error, one job.failed event, one DLQ message and one email."""
    stack.start_worker(PRECIS_MAX_ATTEMPTS="3", PRECIS_RETRY_BACKOFF_S="1")
    stack.stop_triton()
    ids = [stack.submit(doc(100 + i, 200)) for i in range(3)]
    rows = stack.wait_terminal(ids, 240)
    for r in rows.values():
        assert r["status"] == "failed", dict(r)
        assert r["attempts"] == 3
        assert r["error_type"] == "model_error"
        # a client-safe reason, not Triton's own text (worker/runner.py client_reason)
        assert "gave up after 3 attempts; last error: model server" in r["error_detail"], r["error_detail"]
        v = stack.view(r["id"])
        assert v["status"] == "failed" and "gave up after 3 attempts" in v["error"]["detail"]
    stack.assert_exactly_once(ids, expect="failed")
    dlq = [m for m in stack.topic("precis.jobs.dlq") if m["job_id"] in ids]
    assert sorted(m["job_id"] for m in dlq) == sorted(ids)
    assert all(m["last_error"] for m in dlq)
    retries = [m for m in stack.topic("precis.jobs.retry") if m["job_id"] in ids]
    assert len(retries) == 2 * len(ids)  # attempts 2 and 3
    assert port_open(stack.async_port)
