"""Local two-Triton split: `make bench-local-split` -> bench/results/local_split.json + .png.

`make run` starts a realtime Triton (realtime_svc's) and a batch Triton (the worker's) on the same
cores, the batch one at SCHED_IDLE. This measures that choice against the alternatives on one
running stack (scripts/run.sh on private ports, devstack), switching arms live:

  shared  one server for both paths, as before the split: the paragraph goes to the batch Triton
          (gRPC, directly: same model, same queue as the job's chunks; the gateway and realtime_svc
          hops, a few ms, are not in this arm), batch server at normal priority
  normal  two servers, batch at normal priority (nice 0, SCHED_OTHER)
  nice    two servers, batch at nice 19
  idle    two servers, batch at SCHED_IDLE (`chrt -i 0`): the default of `make run`
  alone   no realtime requests: the job's chunk pace with the cores to itself (the reference)

The batch server's priority is changed on every thread of tritonserver and of its python
backend stubs (where the model runs) with sched_setscheduler/setpriority per thread, as `nice` /
`chrt` at start would have set it (threads created later inherit it).

Realtime load: one paragraph (64-token summary) every --interval s through the gateway (open
loop, like users; a request is sent on time even if the previous one is still out), by default
twice the idle p50 apart, so the realtime server alone would be half busy and the batch server
gets the gaps (a first run at a fixed 2.5 s, on a machine where a paragraph took 4 s, measured the
realtime server's own overload, not the arms). Batch load: one long async job (a slice of the book) running through the
whole measurement, with 256-token chunks, 32-token chunk summaries and at most 4 model calls in
flight, so a batch execution takes seconds, not minutes, and progress shows within a window. Per
window: the job's `chunks_done` at its start and end, and the CPU seconds the batch server (with
its stubs) got, which shows starvation without the chunk counter's granularity. Rounds interleave
the arms, the order rotating every round, so drift of this shared VM hits every arm alike. Idle
latency (no job) is measured first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.triton_client import SummarizerClient  # noqa: E402
from devstack import Proc, StackPorts, child_env, cpu_seconds, launch_stack, port_open, wait_stack  # noqa: E402

RESULTS = ROOT / "bench/results"
AUTH = {"Authorization": "Bearer precis-dev-key"}
PARAGRAPH = (
    "The city council voted on Tuesday to extend the bike lane network by 40 kilometres over the next "
    "three years. Officials said cycling has risen by a quarter since 2020, and that the new lanes will "
    "connect the university district with the central station. Local businesses were split: some "
    "welcomed more foot traffic, while others worried about losing parking spaces."
)
ARMS = ("shared", "normal", "nice", "idle", "alone")


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))], 3)


def set_priority(root: psutil.Process, arm: str) -> int:
    """The batch server's CPU priority for ``arm`` on every thread of it and its descendants."""
    n = 0
    for p in [root, *root.children(recursive=True)]:
        for tid in os.listdir(f"/proc/{p.pid}/task"):
            t = int(tid)
            try:
                if arm == "idle":
                    os.sched_setscheduler(t, os.SCHED_IDLE, os.sched_param(0))
                else:
                    os.sched_setscheduler(t, os.SCHED_OTHER, os.sched_param(0))
                    os.setpriority(os.PRIO_PROCESS, t, 19 if arm == "nice" else 0)
                n += 1
            except (ProcessLookupError, PermissionError):
                pass
    return n


class Bench:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.ports = StackPorts.allocate()
        self.var = Path(a.var).resolve()
        self.proc: Proc | None = None
        self.job = ""
        self.batch_root: psutil.Process | None = None

    def start(self) -> None:
        shutil.rmtree(self.var, ignore_errors=True)
        self.var.mkdir(parents=True)
        env = child_env(
            self.var,
            PRECIS_SKIP_INSTALL="1",
            PRECIS_READY_TIMEOUT="600",
            PRECIS_RATE_LIMIT_PER_MINUTE="1000000",
            PRECIS_QUOTA_MAX_STORED_BYTES=str(10**12),
            PRECIS_CHUNK_TOKENS=str(self.a.chunk_tokens),
            PRECIS_CHUNK_SUMMARY_TOKENS="32",
            PRECIS_MAX_IN_FLIGHT_CALLS="4",
        )
        t0 = time.monotonic()
        self.proc = launch_stack(self.ports, env, self.var.parent / f"{self.var.name}-stack.log")
        wait_stack(self.proc, self.ports, 600)
        print(f"stack ready in {time.monotonic() - t0:.0f}s (offset {self.ports.offset})", flush=True)
        grpc = f"--grpc-port={self.ports.batch_triton_grpc}"
        found = [
            p
            for p in psutil.Process(self.proc.p.pid).children(recursive=True)
            if p.name() == "tritonserver" and grpc in p.cmdline()
        ]
        assert len(found) == 1, found
        self.batch_root = found[0]

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.p.send_signal(signal.SIGTERM)
        try:
            self.proc.p.wait(90)
        except Exception:  # noqa: BLE001
            self.proc.kill()
        self.proc.stop()
        left = [x for x in [*self.ports.services, *self.ports.triton] if port_open(x)]
        if left:
            print(f"warning: ports still open after the stop: {left}", flush=True)

    async def realtime_once(self, http: httpx.AsyncClient, shared: SummarizerClient | None) -> float | str:
        t0 = time.perf_counter()
        try:
            if shared is not None:
                await shared.summarize(PARAGRAPH, 64, timeout_s=120)
            else:
                r = await http.post(
                    "/v1/summaries",
                    json={"text": PARAGRAPH, "mode": "realtime", "max_summary_tokens": 64},
                    headers=AUTH,
                )
                if r.status_code != 200:
                    return f"http {r.status_code}"
        except Exception as exc:  # noqa: BLE001
            return type(exc).__name__
        return time.perf_counter() - t0

    async def load(self, http: httpx.AsyncClient, seconds: float, shared: SummarizerClient | None) -> list[float | str]:
        """One request every --interval s for ``seconds`` (open loop); their latencies."""
        tasks = []
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            tasks.append(asyncio.create_task(self.realtime_once(http, shared)))
            await asyncio.sleep(self.a.interval)
        return list(await asyncio.gather(*tasks))

    async def progress(self, http: httpx.AsyncClient) -> tuple[int, int, str]:
        v = (await http.get(f"/v1/summaries/{self.job}", headers=AUTH)).json()
        return v["progress"]["chunks_done"], v["progress"]["chunks_total"], v["status"]

    async def run(self) -> dict:
        a = self.a
        assert self.batch_root is not None
        out: dict = {"config": vars(a), "windows": []}
        async with httpx.AsyncClient(base_url=self.ports.url, timeout=180) as http:
            # warm both paths, then idle latency: no job anywhere
            await self.realtime_once(http, None)
            idle = [await self.realtime_once(http, None) for _ in range(a.idle_requests)]
            out["idle"] = idle
            p50 = pct([x for x in idle if isinstance(x, float)], 50) or 1.0
            if not a.interval:  # auto: the realtime server half busy when it has the cores alone
                a.interval = round(max(2.5, 2 * p50), 1)
            out["interval_s"] = a.interval
            print(f"idle: p50 {p50} s; one realtime request every {a.interval} s", flush=True)

            book = (ROOT / "tests/data/book/pride_and_prejudice.txt").read_text().split()
            text = " ".join(book[3000 : 3000 + a.job_words])
            r = await http.post("/v1/summaries", json={"text": text, "mode": "async"}, headers=AUTH)
            assert r.status_code == 202, r.text
            self.job = r.json()["id"]
            while (await self.progress(http))[0] < 1:  # noqa: ASYNC110  # polls the API: running, first batch done
                await asyncio.sleep(1)
            shared = SummarizerClient(f"127.0.0.1:{self.ports.batch_triton_grpc}", "summarizer")
            try:
                for rnd in range(a.rounds):
                    order = ARMS[rnd % len(ARMS) :] + ARMS[: rnd % len(ARMS)]
                    for arm in order:
                        set_priority(self.batch_root, "normal" if arm in ("shared", "alone") else arm)
                        await asyncio.sleep(a.settle)
                        c0, total, st = await self.progress(http)
                        if st != "running":
                            raise SystemExit(f"the job is {st} before the end: raise --job-words")
                        cpu0 = cpu_seconds(self.batch_root.pid)
                        t0 = time.monotonic()
                        if arm == "alone":
                            await asyncio.sleep(a.window)
                            lat: list[float | str] = []
                        else:
                            lat = await self.load(http, a.window, shared if arm == "shared" else None)
                        c1, total, st = await self.progress(http)
                        dt = time.monotonic() - t0
                        cpu = cpu_seconds(self.batch_root.pid) - cpu0
                        w = {
                            "round": rnd,
                            "arm": arm,
                            "latencies_s": lat,
                            "chunks": c1 - c0,
                            "batch_cpu_s": round(cpu, 2),
                            "window_s": round(dt, 2),
                        }
                        out["windows"].append(w)
                        ok = [x for x in lat if isinstance(x, float)]
                        print(
                            f"round {rnd} {arm:6s}: p50 {pct(ok, 50)} p99 {pct(ok, 99)} s, "
                            f"{len(lat) - len(ok)} errors, {c1 - c0} chunks, batch CPU {cpu / dt:.2f} cores "
                            f"in {dt:.0f}s ({c1}/{total})",
                            flush=True,
                        )
            finally:
                await shared.close()
                set_priority(self.batch_root, "idle")
                await http.delete(f"/v1/summaries/{self.job}", headers=AUTH)
        return out


def summarize(raw: dict) -> dict:
    idle = [x for x in raw["idle"] if isinstance(x, float)]
    arms: dict = {"idle_no_job": {"p50_s": pct(idle, 50), "p99_s": pct(idle, 99), "n": len(idle)}}
    for arm in ARMS:
        ws = [w for w in raw["windows"] if w["arm"] == arm]
        lat = [x for w in ws for x in w["latencies_s"] if isinstance(x, float)]
        errs = [x for w in ws for x in w["latencies_s"] if not isinstance(x, float)]
        secs = sum(w["window_s"] for w in ws)
        chunks = sum(w["chunks"] for w in ws)
        arms[arm] = {
            "p50_s": pct(lat, 50),
            "p99_s": pct(lat, 99),
            "mean_s": round(statistics.fmean(lat), 3) if lat else None,
            "n": len(lat),
            "errors": len(errs),
            "job_chunks": chunks,
            "job_chunks_per_min": round(60 * chunks / secs, 2) if secs else None,
            "batch_cpu_cores": round(sum(w["batch_cpu_s"] for w in ws) / secs, 3) if secs else None,
        }
    return arms


def plot(arms: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["idle_no_job", "shared", "normal", "nice", "idle"]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2))
    x = range(len(names))
    ax1.bar([i - 0.2 for i in x], [arms[n]["p50_s"] or 0 for n in names], 0.4, label="p50")
    ax1.bar([i + 0.2 for i in x], [arms[n]["p99_s"] or 0 for n in names], 0.4, label="p99")
    ax1.set_xticks(
        list(x), ["no job", "shared\nserver", "2 servers\nnice 0", "2 servers\nnice 19", "2 servers\nSCHED_IDLE"]
    )
    ax1.set_ylabel("realtime paragraph latency (s)")
    ax1.set_title("realtime latency while a long async job runs")
    ax1.legend()
    cn = ["alone", "shared", "normal", "nice", "idle"]
    ax2.bar(range(len(cn)), [arms[n]["job_chunks_per_min"] or 0 for n in cn], color="tab:green")
    ax2.set_xticks(range(len(cn)), ["no realtime\nload", "shared\nserver", "nice 0", "nice 19", "SCHED_IDLE"])
    ax2.set_ylabel("async job: chunks done per minute")
    ax2.set_title("batch progress in the same windows")
    ax3.bar(range(len(cn)), [arms[n]["batch_cpu_cores"] or 0 for n in cn], color="tab:gray")
    ax3.set_xticks(range(len(cn)), ["no realtime\nload", "shared\nserver", "nice 0", "nice 19", "SCHED_IDLE"])
    ax3.set_ylabel("CPU cores the batch server got")
    ax3.set_title("batch server CPU in the same windows")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--window", type=float, default=32.0, help="seconds per arm per round")
    ap.add_argument(
        "--interval",
        type=float,
        default=0,
        help="seconds between realtime requests (0: twice the idle p50, at least 2.5: the realtime "
        "server half busy on its own, so what slows it is the batch server, not its own queue)",
    )
    ap.add_argument("--settle", type=float, default=2.0, help="seconds after a priority change")
    ap.add_argument("--idle-requests", type=int, default=8)
    ap.add_argument("--job-words", type=int, default=30000, help="the async job's length (book words)")
    ap.add_argument("--chunk-tokens", type=int, default=256, help="the worker's PRECIS_CHUNK_TOKENS")
    ap.add_argument("--var", default=str(ROOT / "var/bench-local-split"))
    ap.add_argument("--out", default=str(RESULTS / "local_split.json"))
    a = ap.parse_args()
    b = Bench(a)
    t0 = time.monotonic()
    try:
        b.start()
        raw = asyncio.run(b.run())
    finally:
        b.stop()
    arms = summarize(raw)
    result = {
        "what": "realtime paragraph latency and the async job's chunk pace per batch-server arrangement",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "run_s": round(time.monotonic() - t0, 1),
        "arms": arms,
        "raw": raw,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(arms, out.with_suffix(".png"))
    print(json.dumps(arms, indent=2))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
