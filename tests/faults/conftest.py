"""Fault-injection stack: every component is a real process started the way `make run` starts it
(scripts/kafka.sh, scripts/triton.sh, scripts/smtp_sink.py, `python -m <service>`), but each one
separately, so a test can SIGKILL a worker, restart the broker or stop Triton.

Ports come from devstack.PORTS (free, and this run's alone). Model calls are kept short (128-token
chunks, 16-token summaries) so the suite runs in minutes on a 2-core CPU.
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

from common.internal_auth import InternalTokenAuth
from devstack import (
    INTERNAL_TOKEN_SECRET,
    PORTS,
    ROOT,
    KafkaPorts,
    Proc,
    TritonPorts,
    child_env,
    launch_kafka,
    launch_service,
    launch_smtp_sink,
    launch_triton,
    port_open,
    start_service,
    wait_triton,
    wait_until,
)

TENANT = "faults"
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
        self.kafka_ports, self.triton_ports = KafkaPorts.allocate(), TritonPorts.allocate()
        self.async_port, self.notifier_port, self.smtp_port = PORTS.one(), PORTS.one(), PORTS.one()
        self.base_env = child_env(
            var,
            PRECIS_DATABASE_URL=f"sqlite+aiosqlite:///{var / 'precis.db'}",
            PRECIS_KAFKA_BOOTSTRAP_SERVERS=self.kafka_ports.bootstrap,
            PRECIS_TRITON_GRPC_URL=self.triton_ports.grpc_url,
            PRECIS_SMTP_PORT=str(self.smtp_port),
            PRECIS_SMTP_HOST="127.0.0.1",
            PRECIS_LOG_LEVEL="INFO",
        )
        self.kafka: Proc | None = None
        self.triton: Proc | None = None
        self.smtp: Proc | None = None
        self.async_svc: Proc | None = None
        self.notifier: Proc | None = None
        self.workers: list[Proc] = []
        self._n = 0
        # async_svc directly, signed as the gateway signs (child_env gave it INTERNAL_TOKEN_SECRET)
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.async_port}",
            timeout=30,
            auth=InternalTokenAuth(INTERNAL_TOKEN_SECRET, TENANT, "async_svc"),
        )

    @staticmethod
    def as_tenant(tenant: str) -> InternalTokenAuth:
        """Calls signed as the gateway signs them for ``tenant``."""
        return InternalTokenAuth(INTERNAL_TOKEN_SECRET, tenant, "async_svc")

    # ---- processes ---------------------------------------------------------------------------

    def _log(self, name: str) -> Path:
        self._n += 1
        return self.var / f"{self._n:02d}-{name}.log"

    def _proc(self, name: str, argv: list[str], **env: str) -> Proc:
        return Proc(name, argv, {**self.base_env, **env}, self._log(name))

    def start_kafka(self) -> None:
        self.kafka = launch_kafka(self.kafka_ports, self.base_env, self._log("kafka"))
        wait_until(lambda: port_open(self.kafka_ports.broker), 120, "kafka port", self.kafka)

    def stop_kafka(self) -> None:
        assert self.kafka is not None
        self.kafka.stop(60)
        wait_until(lambda: not port_open(self.kafka_ports.broker), 30, "kafka port closed")

    def start_triton(self, wait: bool = True) -> None:
        self.triton = launch_triton(self.triton_ports, self.base_env, self._log("triton"))
        if wait:
            self.wait_triton()

    def wait_triton(self) -> None:
        assert self.triton is not None
        wait_triton(self.triton, self.triton_ports, TRITON_READY_S)

    def stop_triton(self) -> None:
        if self.triton is not None:
            self.triton.stop(60)
        wait_until(lambda: not port_open(self.triton_ports.grpc), 30, "triton port closed")

    def start_async(self, **env: str) -> Proc:
        self.async_svc = start_service(
            "async_svc", self.async_port, {**self.base_env, **env}, self._log("async_svc"), timeout=120
        )
        return self.async_svc

    def start_notifier(self) -> None:
        self.notifier = start_service(
            "notifier", self.notifier_port, self.base_env, self._log("notifier"), ready="/readyz", timeout=120
        )

    def start_worker(self, wait: bool = True, **env: str) -> Proc:
        name = f"worker{len(self.workers)}"
        w = launch_service("worker", PORTS.one(), {**self.base_env, **WORKER_ENV, **env}, self._log(name), name)
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

    def submit(
        self, text: str, key: str | None = None, *, summary_tokens: int = 16, notify: bool = True, tenant: str = ""
    ) -> str:
        headers = {"Idempotency-Key": key} if key else {}
        body: dict = {"text": text, "max_summary_tokens": summary_tokens}
        if notify:
            body["notify"] = {"email": "faults@example.com"}
        # job messages are keyed by tenant: another tenant, (in general) another partition
        r = self.http.post("/internal/jobs", json=body, headers=headers, auth=self.as_tenant(tenant or TENANT))
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

        return asyncio.run(read_topic(self.kafka_ports.bootstrap, topic))

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
            text = httpx.get(self.triton_ports.metrics_url, timeout=5).text
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
    var = tmp_path_factory.mktemp("faults-var")
    st = FaultStack(var)
    t0 = time.monotonic()
    try:
        st.start_triton(wait=False)  # loads the model while the rest starts
        st.smtp = launch_smtp_sink(st.smtp_port, st.base_env, st._log("smtp"))
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
