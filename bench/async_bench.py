"""`make bench-async`: the async pipeline end to end through the gateway, on the real stack.

1. Starts the stack like `make run` (scripts/run.sh under honcho, PRECIS_SKIP_INSTALL=1, free
   ports allocated by devstack or shifted by --offset, its own var dir), waits for the gateway's
   /readyz.
2. A public-domain book (tests/data/book, ~121k words) as one async job: time to `succeeded`,
   progress polled through GET /v1/summaries/{id}.
3. N short jobs (mode=async) submitted by --concurrency asyncio/httpx submitters: intake rate
   (202s per second; each 202 means job + document + outbox row committed), then waits (bounded)
   for all of them. A submission that fails in transport (connection reset or closed without a
   response, timeout) is retried with the same Idempotency-Key, a bounded number of times; the
   retries are counted, and the audit checks that no retry created a second job.
4. Throughout, samples Triton's own Prometheus metrics (batch size = Δrequest_success/Δexec_count),
   queue depth (jobs queued/running in the store) and progress.
5. Audits: every accepted job is in the store and published (or still in the outbox), and the
   terminal events on precis.events (read from the beginning) are counted per job.

Writes bench/results/async.json and bench/results/async.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import sqlite3
import ssl
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack import Proc, StackPorts, child_env, cpu_seconds, launch_stack, port_open, wait_stack  # noqa: E402

BOOK = ROOT / "tests/data/book/pride_and_prejudice.txt"
RESULTS = ROOT / "bench/results"
TERMINAL = ("succeeded", "failed", "cancelled")


class Bench:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        # allocated (free, this run's alone) unless --offset names them
        self.ports = StackPorts(a.offset) if a.offset is not None else StackPorts.allocate()
        self.url = self.ports.url
        # the worker's Triton: the batch deployment since `make run` runs two (docs/architecture.md)
        self.metrics_url = f"http://127.0.0.1:{self.ports.batch_triton_metrics}/metrics"
        self.kafka = f"127.0.0.1:{self.ports.kafka}"
        self.var = Path(a.var).resolve()
        self.db = self.var / "precis.db"
        self.headers = {"Authorization": "Bearer precis-dev-key"}
        self.samples: list[dict] = []
        self.phase = "start"
        self.book_progress = (0, 0)
        self.t0 = time.monotonic()
        self.proc: Proc | None = None
        # psycopg2 (sync, for sampling and the audit) takes the URL without SQLAlchemy's driver part
        self.pg_dsn = (a.database_url or "").replace("postgresql+asyncpg", "postgresql")

    # ---- stack -------------------------------------------------------------------------------

    def start(self) -> None:
        if self.var.exists():
            shutil.rmtree(self.var)
        self.var.mkdir(parents=True)
        p = self.ports
        busy = [x for x in (p.gateway, *p.triton, p.kafka) if port_open(x)]
        if busy:
            raise SystemExit(f"ports busy at offset {p.offset}: {busy}")
        if self.a.database_url:
            self._empty_pg()
        env = child_env(
            self.var,
            PRECIS_SKIP_INSTALL="1",
            PRECIS_READY_TIMEOUT="600",
            # The load generator is one tenant: lift the per-tenant limit so intake is measured.
            PRECIS_RATE_LIMIT_PER_MINUTE="1000000",
            PRECIS_RATE_LIMIT_BYTES_PER_MINUTE="1000000000000",
            # ... and its job quotas (async_svc: 20 unfinished jobs per tenant by default).
            PRECIS_QUOTA_MAX_ACTIVE_JOBS="1000000",
            PRECIS_QUOTA_MAX_STORED_DOCUMENTS="1000000000",
            PRECIS_QUOTA_MAX_STORED_BYTES=str(10**15),
            **({"PRECIS_DATABASE_URL": self.a.database_url} if self.a.database_url else {}),
        )
        print(f"starting the stack (scripts/run.sh, port offset {self.ports.offset}, var {self.var})", flush=True)
        self.proc = launch_stack(self.ports, env, self.var.parent / f"{self.var.name}-stack.log")
        wait_stack(self.proc, self.ports, 600)
        print(f"stack ready in {time.monotonic() - self.t0:.0f}s", flush=True)

    def _empty_pg(self) -> None:
        """Start from an empty store, as the SQLite run does with its fresh var dir: Kafka starts empty
        too, so the jobs of an earlier run would be answered as idempotent replays (same keys) and then
        audited as lost (no message on the new broker)."""
        import psycopg2

        with psycopg2.connect(self.pg_dsn) as con, con.cursor() as cur:
            cur.execute("SELECT to_regclass('jobs') IS NOT NULL")
            if cur.fetchone()[0]:  # else the first run: scripts/run.sh creates the tables
                print("emptying the store's tables (--database-url)", flush=True)
                cur.execute("TRUNCATE notifications, chunk_results, outbox, jobs")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.p.send_signal(signal.SIGTERM)
            try:
                self.proc.p.wait(90)
            except Exception:  # noqa: BLE001
                self.proc.kill()
            self.proc.stop()

    # ---- sampling ----------------------------------------------------------------------------

    async def triton(self, http: httpx.AsyncClient) -> dict[str, float]:
        out: dict[str, float] = {}
        try:
            text = (await http.get(self.metrics_url, timeout=5)).text
        except httpx.HTTPError:
            return out
        for name in (
            "nv_inference_request_success",
            "nv_inference_exec_count",
            "nv_inference_count",
            "nv_inference_pending_request_count",
        ):
            m = re.search(rf'^{name}\{{[^}}]*model="summarizer"[^}}]*\}} ([0-9.e+]+)$', text, re.M)
            if m:
                out[name] = float(m.group(1))
        return out

    def queue(self) -> dict[str, int]:
        if self.a.database_url:
            return self._queue_pg()
        try:
            con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
            rows = con.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
            con.close()
            return dict(rows)
        except sqlite3.Error:
            return {}

    def _queue_pg(self) -> dict[str, int]:
        import psycopg2

        with psycopg2.connect(self.pg_dsn) as con, con.cursor() as cur:
            cur.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
            return dict(cur.fetchall())

    async def sampler(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient() as http:
            while not stop.is_set():
                tr = await self.triton(http)
                q = await asyncio.to_thread(self.queue)
                self.samples.append(
                    {
                        "t": round(time.monotonic() - self.t0, 2),
                        "phase": self.phase,
                        "queued": q.get("queued", 0),
                        "running": q.get("running", 0) + q.get("cancelling", 0),
                        "done": sum(q.get(s, 0) for s in TERMINAL),
                        "book_done": self.book_progress[0],
                        "book_total": self.book_progress[1],
                        **tr,
                    }
                )
                try:
                    await asyncio.wait_for(stop.wait(), self.a.sample_s)
                except TimeoutError:
                    pass

    def service_cpu(self) -> dict[str, float]:
        """CPU seconds (user+system) used so far by each stack process, by role."""
        import psutil

        roles = {
            "gateway": "-m gateway",
            "async_svc": "-m async_svc",
            "worker": "-m worker",
            "notifier": "-m notifier",
            "triton": "tritonserver",
            "kafka": "kafka.Kafka",
        }
        out: dict[str, float] = dict.fromkeys(roles, 0.0)
        if self.proc is None:
            return out
        try:
            procs = psutil.Process(self.proc.p.pid).children(recursive=True)
        except psutil.Error:
            return out
        for pr in procs:
            try:
                cmd = " ".join(pr.cmdline())
            except psutil.Error:
                continue
            for role, needle in roles.items():
                if needle in cmd:
                    # with descendants: the model runs in tritonserver's python-backend stub
                    out[role] += cpu_seconds(pr.pid)
                    break
        return out

    # ---- phases ------------------------------------------------------------------------------

    async def book(self, http: httpx.AsyncClient) -> dict:
        text = BOOK.read_text()
        if self.a.book_words:
            text = " ".join(text.split(" ")[: self.a.book_words])
        self.phase = "book"
        t0 = time.monotonic()
        r = await http.post(
            f"{self.url}/v1/summaries",
            headers={**self.headers, "Idempotency-Key": "bench-book"},
            json={"text": text, "mode": "async", "max_summary_tokens": 256},
            timeout=120,
        )
        r.raise_for_status()
        job = r.json()
        bar = tqdm(desc="book (model calls)", unit="call", dynamic_ncols=True)
        view: dict = {}
        while True:
            view = (await http.get(job["status_url"], headers=self.headers, timeout=30)).json()
            done, total = view["progress"]["chunks_done"], view["progress"]["chunks_total"]
            self.book_progress = (done, total)
            bar.total = total
            bar.n = done
            bar.set_postfix_str(view["status"])
            bar.refresh()
            if view["status"] in TERMINAL:
                break
            if time.monotonic() - t0 > self.a.book_timeout:
                break
            await asyncio.sleep(2)
        bar.close()
        took = time.monotonic() - t0
        return {
            "id": job["id"],
            "status": view["status"],
            "seconds": round(took, 1),
            "words": len(text.split()),
            "chunks_total": view["progress"]["chunks_total"],
            "chunks_done": view["progress"]["chunks_done"],
            "summary": (view.get("summary") or "")[:600],
        }

    async def short_jobs(self) -> dict:
        words = BOOK.read_text().split()
        n = self.a.jobs
        texts = [" ".join(words[5000 + i * 60 : 5000 + i * 60 + 60]) + f" (bench job {i})" for i in range(n)]
        self.phase = "intake"
        bar = tqdm(total=n, desc="intake (202)", unit="job", dynamic_ncols=True)
        codes: Counter = Counter()
        ids: list[str] = []
        retried: Counter = Counter()  # transport errors that were retried, by exception type
        replayed = 0  # 202s answered from an earlier attempt's job (Idempotent-Replayed)

        def count_retry(state: RetryCallState) -> None:
            retried[type(state.outcome.exception()).__name__] += 1

        async def one(http: httpx.AsyncClient, i: int) -> None:
            nonlocal replayed
            # A transport error leaves the client not knowing whether the job was created (the
            # request may have been committed and only the answer lost). Sending it again with the
            # same Idempotency-Key is safe: the service answers with the first attempt's job.
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(httpx.TransportError),
                stop=stop_after_attempt(self.a.submit_attempts),
                wait=wait_exponential(multiplier=0.5, max=8),
                before_sleep=count_retry,
                reraise=True,
            ):
                with attempt:
                    r = await http.post(
                        f"{self.url}/v1/summaries",
                        headers={**self.headers, "Idempotency-Key": f"bench-short-{i}"},
                        json={
                            "text": texts[i],
                            "mode": "async",
                            "max_summary_tokens": self.a.short_tokens,
                            "notify": {"email": f"bench{i}@example.com"},
                        },
                        timeout=120,
                    )
            codes[r.status_code] += 1
            if r.status_code == 202:
                ids.append(r.json()["id"])
                replayed += r.headers.get("Idempotent-Replayed") == "true"
            bar.update(1)

        # `concurrency` submitters, each with a client of its own holding one keep-alive connection,
        # instead of n requests queued on one client's pool of `concurrency` connections: httpcore's
        # pool (1.0.x) rescans every connection, and every queued request, each time a request
        # starts or ends (encode/httpcore#1035). Measured here, 1000 requests to a 0.5 s endpoint:
        # 55 s of client CPU through one pool of 200 (and ReadErrors), 2 s this way. The old way
        # capped the measured intake rate at the load generator (~12-23 jobs/s), and left
        # connections idle past the server's keep-alive timeout while its loop was busy: the server
        # closed them just as the client reused them (httpx.ReadError).
        todo: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            todo.put_nowait(i)

        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        tls = ssl.create_default_context()  # shared: building one per client costs ~50 ms of CPU

        async def submitter() -> None:
            async with httpx.AsyncClient(limits=limits, verify=tls) as own:
                while not todo.empty():
                    await one(own, todo.get_nowait())

        cpu0 = await asyncio.to_thread(self.service_cpu)
        t0 = time.monotonic()
        await asyncio.gather(*(submitter() for _ in range(min(n, self.a.concurrency))))
        intake_s = time.monotonic() - t0
        cpu1 = await asyncio.to_thread(self.service_cpu)
        bar.close()
        # What bounds intake: CPU each process spent per accepted job during the burst, and the
        # share of the machine it had (the model keeps working on earlier jobs meanwhile).
        accepted = max(1, len(ids))
        cpu_ms = {k: round((cpu1[k] - cpu0[k]) * 1000 / accepted, 2) for k in cpu0}
        cores = os.cpu_count() or 1
        busy = {k: round((cpu1[k] - cpu0[k]) / intake_s / cores * 100, 1) for k in cpu0}
        self.phase = "drain"
        bar = tqdm(total=len(ids), desc="short jobs done", unit="job", dynamic_ncols=True)
        t1 = time.monotonic()
        finished = 0
        while time.monotonic() - t1 < self.a.drain_timeout:
            q = await asyncio.to_thread(self.queue)
            finished = sum(q.get(s, 0) for s in TERMINAL) - self._book_terminal
            bar.n = max(0, min(finished, len(ids)))
            bar.refresh()
            if q.get("queued", 0) == 0 and q.get("running", 0) == 0 and q.get("cancelling", 0) == 0:
                break
            await asyncio.sleep(2)
        bar.close()
        drain_s = time.monotonic() - t1
        return {
            "submitted": n,
            "accepted": len(ids),
            "status_codes": dict(codes),
            "intake_seconds": round(intake_s, 2),
            "intake_jobs_per_s": round(len(ids) / intake_s, 1),
            "intake_transport_retries": sum(retried.values()),
            "intake_transport_errors": dict(retried),
            "intake_idempotent_replays": replayed,
            "drain_seconds": round(drain_s, 1),
            "intake_cpu_ms_per_job": cpu_ms,
            "intake_machine_share_pct": busy,
            "intake_bound_jobs_per_s_if_alone": round(
                cores * 1000 / max(1e-9, cpu_ms["gateway"] + cpu_ms["async_svc"]), 1
            ),
            "ids": ids,
        }

    # ---- audit -------------------------------------------------------------------------------

    async def topic(self, topic: str) -> list[dict]:
        from common.kafka import read_topic

        return await read_topic(self.kafka, topic)

    def store_rows(self, sql: str) -> list[tuple]:
        if self.a.database_url:
            import psycopg2

            with psycopg2.connect(self.pg_dsn) as con, con.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    async def audit(self, accepted: list[str]) -> dict:
        await asyncio.sleep(5)  # let the relays publish the last events
        jobs = {r[0]: r[1] for r in self.store_rows("SELECT id, status FROM jobs")}
        pending = {r[0] for r in self.store_rows("SELECT key FROM outbox WHERE published_at IS NULL")}
        job_msgs = Counter(m["job_id"] for m in await self.topic("precis.jobs"))
        events = await self.topic("precis.events")
        per_job = Counter(e["job_id"] for e in events)
        mails: Counter = Counter()
        import email as email_mod

        for p in (self.var / "mail").glob("*.eml"):
            mails[email_mod.message_from_bytes(p.read_bytes())["X-Precis-Job-Id"]] += 1
        # Jobs in the store that no 202 named (bench jobs only): a retried submission that created a
        # second job instead of answering with the first would show up here.
        short = {r[0] for r in self.store_rows("SELECT id FROM jobs WHERE idempotency_key LIKE 'bench-short-%'")}
        unaccepted = short - set(accepted)
        lost = [
            i
            for i in accepted
            if i not in jobs
            or (job_msgs[i] == 0 and i not in pending)
            or (jobs[i] in TERMINAL and per_job[i] == 0 and i not in pending)
        ]
        dup_events = sum(n - 1 for n in per_job.values() if n > 1)
        states = Counter(jobs.get(i, "missing") for i in accepted)
        notified = [i for i in accepted if jobs.get(i) in TERMINAL]
        return {
            "accepted": len(accepted),
            "states": dict(states),
            "lost_jobs": len(lost),
            "lost_ids": lost[:20],
            "duplicate_accepted_ids": len(accepted) - len(set(accepted)),
            "jobs_not_accepted": len(unaccepted),
            "jobs_not_accepted_ids": sorted(unaccepted)[:20],
            "duplicate_job_messages": sum(n - 1 for n in job_msgs.values() if n > 1),
            "terminal_events": len(events),
            "duplicate_terminal_events": dup_events,
            "emails_for_terminal_jobs": sum(mails[i] for i in notified),
            "duplicate_emails": sum(mails[i] - 1 for i in notified if mails[i] > 1),
            "terminal_jobs_without_email": sum(1 for i in notified if mails[i] == 0),
        }

    # ---- report ------------------------------------------------------------------------------

    def batch_stats(self) -> dict:
        deep, all_ = [0.0, 0.0], [0.0, 0.0]
        series = []
        for a, b in zip(self.samples, self.samples[1:], strict=False):
            if "nv_inference_exec_count" not in a or "nv_inference_exec_count" not in b:
                continue
            dx = b["nv_inference_exec_count"] - a["nv_inference_exec_count"]
            dr = b["nv_inference_request_success"] - a["nv_inference_request_success"]
            series.append((b["t"], dr / dx if dx > 0 else None))
            if dx <= 0:
                continue
            all_[0] += dr
            all_[1] += dx
            if a["queued"] >= self.a.deep_queue and a["phase"] in ("intake", "drain"):
                deep[0] += dr
                deep[1] += dx
        return {
            "mean_batch_size_deep_queue": round(deep[0] / deep[1], 2) if deep[1] else None,
            "mean_batch_size_overall": round(all_[0] / all_[1], 2) if all_[1] else None,
            "series": series,
        }

    def plot(self, stats: dict, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t = [s["t"] for s in self.samples]
        fig, ax = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
        ax[0].plot(t, [s["queued"] for s in self.samples], label="queued")
        ax[0].plot(t, [s["running"] for s in self.samples], label="running")
        ax[0].set_ylabel("jobs in store")
        ax[0].legend()
        ax[0].set_title("Précis async pipeline (bench/async_bench.py)")
        ax[1].plot(
            t,
            [s["book_done"] / s["book_total"] * 100 if s["book_total"] else 0 for s in self.samples],
            label="book: model calls done %",
        )
        n = max(1, self.a.jobs)
        short = ("intake", "drain", "audit")  # after the book phase
        base = min((s["done"] for s in self.samples if s["phase"] in short), default=0)
        ax[1].plot(
            t,
            [min(100.0, max(0, s["done"] - base) / n * 100) if s["phase"] in short else 0 for s in self.samples],
            label="short jobs done %",
        )
        ax[1].set_ylabel("progress %")
        ax[1].legend()
        bt = [x for x, y in stats["series"] if y is not None]
        by = [y for x, y in stats["series"] if y is not None]
        ax[2].plot(bt, by, ".-", label="Triton batch size (Δrequests/Δexecutions)")
        ax[2].axhline(16, color="grey", lw=0.5, ls="--")
        ax[2].set_ylabel("batch size")
        ax[2].set_xlabel("seconds since start")
        ax[2].legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    async def run(self) -> dict:
        stop = asyncio.Event()
        sampler = asyncio.create_task(self.sampler(stop))
        result: dict = {"machine": {"cpus": os.cpu_count()}, "settings": vars(self.a)}
        try:
            async with httpx.AsyncClient() as http:  # the book and polling; short_jobs has its own
                if not self.a.skip_book:
                    book = await self.book(http)
                    result["book"] = book
                    result["book_seconds"] = book["seconds"] if book["status"] == "succeeded" else None
                self._book_terminal = sum(v for k, v in (await asyncio.to_thread(self.queue)).items() if k in TERMINAL)
                short = await self.short_jobs()
                ids = short.pop("ids")
                result["short_jobs"] = short
                result["intake_jobs_per_s"] = short["intake_jobs_per_s"]
                result["intake_transport_retries"] = short["intake_transport_retries"]
                self.phase = "audit"
                audit = await self.audit(ids + ([result["book"]["id"]] if "book" in result else []))
                result["audit"] = audit
                result["lost_jobs"] = audit["lost_jobs"]
                result["duplicate_terminal_events"] = audit["duplicate_terminal_events"]
        finally:
            stop.set()
            await sampler
        stats = self.batch_stats()
        result["mean_batch_size_deep_queue"] = stats["mean_batch_size_deep_queue"]
        result["mean_batch_size_overall"] = stats["mean_batch_size_overall"]
        result["samples"] = self.samples
        return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--offset",
        type=int,
        default=None,
        help="port offset of the bench stack (scripts/common.sh); default: allocated, every port free",
    )
    p.add_argument("--var", default=str(ROOT / "var/bench-async"), help="state dir of the bench stack")
    p.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL instead of the SQLite default (its job tables are emptied first)",
    )
    p.add_argument("--jobs", type=int, default=1000, help="short jobs submitted at once")
    p.add_argument("--short-tokens", type=int, default=32, help="max_summary_tokens of each short job")
    p.add_argument("--concurrency", type=int, default=200, help="HTTP connections of the load generator")
    p.add_argument(
        "--submit-attempts",
        type=int,
        default=5,
        help="attempts per short job on transport errors (same Idempotency-Key)",
    )
    p.add_argument("--book-words", type=int, default=0, help="only the first N words of the book (0 = all)")
    p.add_argument("--skip-book", action="store_true")
    p.add_argument("--book-timeout", type=float, default=1800)
    p.add_argument("--drain-timeout", type=float, default=1200, help="max seconds to wait for the short jobs")
    p.add_argument("--deep-queue", type=int, default=32, help="queued jobs that count as a deep queue")
    p.add_argument("--sample-s", type=float, default=2.0)
    p.add_argument("--out", default=str(RESULTS / "async.json"))
    a = p.parse_args()
    b = Bench(a)
    b.start()
    try:
        result = asyncio.run(b.run())
    finally:
        b.stop()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    b.plot(Bench.batch_stats(b), png)
    result["plot"] = str(png.relative_to(ROOT)) if png.is_relative_to(ROOT) else str(png)
    out.write_text(json.dumps(result, indent=2, default=str))
    summary = {
        k: result.get(k)
        for k in (
            "book_seconds",
            "mean_batch_size_deep_queue",
            "mean_batch_size_overall",
            "intake_jobs_per_s",
            "intake_transport_retries",
            "lost_jobs",
            "duplicate_terminal_events",
        )
    }
    print(json.dumps(summary, indent=2))
    print(f"wrote {out} and {png}")
    audit = result.get("audit", {})
    ok = not (result.get("lost_jobs") or result.get("duplicate_terminal_events") or audit.get("duplicate_accepted_ids"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
