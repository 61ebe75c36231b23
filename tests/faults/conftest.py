"""Fault-injection stack: every component is a real process started the way `make run` starts it
(scripts/kafka.sh, scripts/triton.sh, scripts/smtp_sink.py, `python -m <service>`), but each one
separately, so a test can SIGKILL a worker, restart the broker or stop Triton.

Ports are the defaults shifted by 23000 (e2e uses 20000, the kafka fixture 21000, Triton tests
10000). Model calls are kept short (128-token chunks, 16-token summaries) so the suite runs in
minutes on a 2-core CPU.
"""

from __future__ import annotations

import asyncio
import email
import os
import re
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.procs import ROOT, Proc, http_ok, port_open, stack_env, wait_until

OFFSET = 23000
TENANT = "faults"
KAFKA_PORT = 9092 + OFFSET
TRITON_HTTP, TRITON_GRPC, TRITON_METRICS = 8000 + OFFSET, 8001 + OFFSET, 8002 + OFFSET
ASYNC_PORT = 8082 + OFFSET
NOTIFIER_PORT = 8084 + OFFSET
SMTP_PORT = 1025 + OFFSET
TRITON_READY_S = float(os.environ.get("PRECIS_TEST_TRITON_READY_TIMEOUT_S", "240"))

# Short model calls and short timers: the faults, not the model, are under test.
WORKER_ENV = {
    "PRECIS_CHUNK_TOKENS": "128",
    "PRECIS_CHUNK_SUMMARY_TOKENS": "16",
    "PRECIS_LEASE_TTL_S": "6",
    "PRECIS_SESSION_TIMEOUT_MS": "6000",
    "PRECIS_MAX_POLL_INTERVAL_MS": "30000",
    "PRECIS_RETRY_BACKOFF_S": "1",
    "PRECIS_RETRY_BACKOFF_MAX_S": "10",
    "PRECIS_MAX_ATTEMPTS": "3",
    "PRECIS_CALL_RETRIES": "2",
    "PRECIS_MAX_IN_FLIGHT_CALLS": "4",
    "PRECIS_DRAIN_TIMEOUT_S": "5",
    "PRECIS_TRITON_TIMEOUT_S": "60",
}
BOOK = (ROOT / "tests/data/book/pride_and_prejudice.txt").read_text().split()


def doc(i: int, words: int = 300) -> str:
    """A distinct slice of the book (i-th slice of `words` words)."""
    start = 3000 + (i * words) % (len(BOOK) - words - 3000)
    return " ".join(BOOK[start : start + words])


class FaultStack:
    def __init__(self, var: Path) -> None:
        self.var = var
        self.db_path = var / "precis.db"
        self.base_env = stack_env(
            var,
            OFFSET,
            PRECIS_DATABASE_URL=f"sqlite+aiosqlite:///{var / 'precis.db'}",
            PRECIS_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{KAFKA_PORT}",
            PRECIS_TRITON_GRPC_URL=f"127.0.0.1:{TRITON_GRPC}",
            PRECIS_SMTP_PORT=str(SMTP_PORT),
            PRECIS_SMTP_HOST="127.0.0.1",
            PRECIS_LOG_LEVEL="INFO",
        )
        if sys.prefix != sys.base_prefix:
            self.base_env.setdefault("PRECIS_VENV", sys.prefix)
        self.kafka: Proc | None = None
        self.triton: Proc | None = None
        self.smtp: Proc | None = None
        self.async_svc: Proc | None = None
        self.notifier: Proc | None = None
        self.workers: list[Proc] = []
        self._n = 0
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{ASYNC_PORT}", timeout=30, headers={"X-Precis-Tenant": TENANT}
        )

    # ---- processes ---------------------------------------------------------------------------

    def _proc(self, name: str, argv: list[str], **env: str) -> Proc:
        self._n += 1
        return Proc(name, argv, {**self.base_env, **env}, self.var / f"{self._n:02d}-{name}.log")

    def start_kafka(self) -> None:
        self.kafka = self._proc("kafka", ["bash", "scripts/kafka.sh"])
        wait_until(lambda: port_open(KAFKA_PORT), 120, "kafka port", self.kafka)

    def stop_kafka(self) -> None:
        assert self.kafka is not None
        self.kafka.stop(60)
        wait_until(lambda: not port_open(KAFKA_PORT), 30, "kafka port closed")

    def start_triton(self, wait: bool = True) -> None:
        self.triton = self._proc(
            "triton",
            ["bash", "scripts/triton.sh"],
            PRECIS_TRITON_HTTP_PORT=str(TRITON_HTTP),
            PRECIS_TRITON_GRPC_PORT=str(TRITON_GRPC),
            PRECIS_TRITON_METRICS_PORT=str(TRITON_METRICS),
        )
        if wait:
            self.wait_triton()

    def wait_triton(self) -> None:
        assert self.triton is not None
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{TRITON_HTTP}/v2/health/ready"),
            TRITON_READY_S,
            "Triton ready",
            self.triton,
            interval=1.0,
        )

    def stop_triton(self) -> None:
        if self.triton is not None:
            self.triton.stop(60)
        wait_until(lambda: not port_open(TRITON_GRPC), 30, "triton port closed")

    def start_async(self, **env: str) -> Proc:
        self.async_svc = self._proc(
            "async_svc", [sys.executable, "-m", "async_svc"], PRECIS_PORT=str(ASYNC_PORT), **env
        )
        wait_until(lambda: http_ok(f"http://127.0.0.1:{ASYNC_PORT}/healthz"), 120, "async_svc", self.async_svc)
        return self.async_svc

    def start_notifier(self) -> None:
        self.notifier = self._proc("notifier", [sys.executable, "-m", "notifier"], PRECIS_PORT=str(NOTIFIER_PORT))
        wait_until(lambda: http_ok(f"http://127.0.0.1:{NOTIFIER_PORT}/readyz"), 120, "notifier", self.notifier)

    def start_worker(self, wait: bool = True, **env: str) -> Proc:
        port = 8083 + OFFSET + 100 * (len(self.workers) + 1)
        w = self._proc(
            f"worker{len(self.workers)}",
            [sys.executable, "-m", "worker"],
            **{**WORKER_ENV, "PRECIS_PORT": str(port), **env},
        )
        w.port = port  # type: ignore[attr-defined]
        self.workers.append(w)
        if wait:
            wait_until(lambda: self._consuming(w), 120, f"{w.name} consuming", w)
        return w

    @staticmethod
    def _consuming(w: Proc) -> bool:
        return "assigned [" in w.log_path.read_text(errors="replace")

    def live_workers(self) -> list[Proc]:
        return [w for w in self.workers if w.alive()]

    def worker_by_pid(self, pid: int) -> Proc | None:
        return next((w for w in self.workers if w.p.pid == pid and w.alive()), None)

    def stop_workers(self) -> None:
        for w in self.live_workers():
            w.stop(30)

    # ---- API ---------------------------------------------------------------------------------

    def submit(self, text: str, key: str | None = None, *, summary_tokens: int = 16, notify: bool = True) -> str:
        headers = {"Idempotency-Key": key} if key else {}
        body: dict = {"text": text, "max_summary_tokens": summary_tokens}
        if notify:
            body["notify"] = {"email": "faults@example.com"}
        r = self.http.post("/internal/jobs", json=body, headers=headers)
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def view(self, job_id: str) -> dict:
        r = self.http.get(f"/internal/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    # ---- store -------------------------------------------------------------------------------

    def sql(self, q: str, *args) -> list[sqlite3.Row]:
        con = sqlite3.connect(self.db_path, timeout=30)
        con.row_factory = sqlite3.Row
        try:
            return con.execute(q, args).fetchall()
        finally:
            con.close()

    def jobs(self, ids: list[str]) -> dict[str, sqlite3.Row]:
        marks = ",".join("?" * len(ids))
        return {r["id"]: r for r in self.sql(f"SELECT * FROM jobs WHERE id IN ({marks})", *ids)}

    def wait_terminal(self, ids: list[str], timeout: float) -> dict[str, sqlite3.Row]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.jobs(ids)
            left = [
                i for i in ids if rows.get(i) is None or rows[i]["status"] not in ("succeeded", "failed", "cancelled")
            ]
            if not left:
                return rows
            if time.monotonic() > deadline:
                states = Counter(rows[i]["status"] if i in rows else "missing" for i in left)
                raise AssertionError(
                    f"{len(left)} job(s) not terminal after {timeout:.0f}s: {dict(states)}\n"
                    + "\n".join(f"--- {w.name}\n{w.tail(25)}" for w in self.live_workers())
                )
            time.sleep(0.5)

    # ---- Kafka and mail ----------------------------------------------------------------------

    def topic(self, topic: str) -> list[dict]:
        """Every message of a topic, from the beginning (a group-less consumer)."""
        from common.kafka import read_topic

        return asyncio.run(read_topic(f"127.0.0.1:{KAFKA_PORT}", topic))

    def event_counts(self, ids: list[str], timeout: float = 90) -> dict[str, Counter]:
        """Terminal events per job, once every job has at least one (plus a grace period)."""
        deadline = time.monotonic() + timeout
        while True:
            evs = self.topic("precis.events")
            per: dict[str, Counter] = {i: Counter() for i in ids}
            for e in evs:
                if e["job_id"] in per:
                    per[e["job_id"]][e["type"]] += 1
            if all(per.values()) or time.monotonic() > deadline:
                break
            time.sleep(1)
        time.sleep(3)  # a duplicate would come right behind the first
        evs = self.topic("precis.events")
        per = {i: Counter() for i in ids}
        for e in evs:
            if e["job_id"] in per:
                per[e["job_id"]][e["type"]] += 1
        return per

    def mails(self) -> Counter:
        out: Counter = Counter()
        for p in (self.var / "mail").glob("*.eml"):
            out[email.message_from_bytes(p.read_bytes())["X-Precis-Job-Id"]] += 1
        return out

    def mail_counts(self, ids: list[str], timeout: float = 60) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(self.mails()[i] for i in ids):
            time.sleep(1)
        time.sleep(2)
        m = self.mails()
        return {i: m[i] for i in ids}

    def triton_metric(self, name: str) -> float:
        try:
            text = httpx.get(f"http://127.0.0.1:{TRITON_METRICS}/metrics", timeout=5).text
        except httpx.HTTPError:
            return 0.0
        m = re.search(rf'^{name}\{{[^}}]*model="summarizer"[^}}]*\}} ([0-9.e+]+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    def assert_exactly_once(self, ids: list[str], expect: str = "succeeded", mails: bool = True) -> None:
        rows = self.wait_terminal(ids, 10)
        wrong = {i: rows[i]["status"] for i in ids if rows[i]["status"] != expect}
        assert not wrong, f"jobs not {expect}: {wrong}"
        per = self.event_counts(ids)
        bad = {i: dict(c) for i, c in per.items() if c != Counter({f"job.{expect}": 1})}
        assert not bad, f"jobs without exactly one job.{expect} event: {bad}"
        if mails:
            got = self.mail_counts(ids)
            bad_m = {i: n for i, n in got.items() if n != 1}
            assert not bad_m, f"jobs without exactly one email: {bad_m}"

    def close(self) -> None:
        self.http.close()
        for p in [*self.workers, self.notifier, self.async_svc, self.smtp, self.triton, self.kafka]:
            if p is not None:
                p.stop(30)


@pytest.fixture(scope="session")
def fstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    ports = [KAFKA_PORT, KAFKA_PORT + 1, TRITON_HTTP, TRITON_GRPC, TRITON_METRICS, ASYNC_PORT, NOTIFIER_PORT, SMTP_PORT]
    busy = [p for p in ports if port_open(p)]
    if busy:
        pytest.fail(f"ports {busy} are busy: is another fault-test stack running?")
    var = tmp_path_factory.mktemp("faults-var")
    st = FaultStack(var)
    t0 = time.monotonic()
    try:
        st.start_triton(wait=False)  # loads the model while the rest starts
        st.smtp = st._proc("smtp", [sys.executable, "scripts/smtp_sink.py"])
        st.start_kafka()
        mig = st._proc("migrate", [sys.executable, "-m", "common.migrate"])
        assert mig.p.wait(120) == 0, mig.tail()
        st.start_async()
        st.start_notifier()
        st.wait_triton()
        print(f"\nfault stack ready in {time.monotonic() - t0:.1f}s (logs in {var})")
        yield st
    finally:
        st.close()


@pytest.fixture()
def stack(fstack: FaultStack) -> Iterator[FaultStack]:
    """The session stack; workers a test starts are stopped after it."""
    yield fstack
    # SIGTERM: they leave the group at once, so the next test's workers get partitions at once.
    for w in fstack.live_workers():
        w.signal(signal.SIGTERM)
    for w in fstack.live_workers():
        w.stop(30)
