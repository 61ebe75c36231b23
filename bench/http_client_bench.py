"""HTTP client cost of one internal hop: `make bench-http-client` -> bench/results/http_client.{json,png}.

Why the gateway calls realtime_svc/async_svc with aiohttp rather than httpx. One uvicorn server
(uvloop + httptools, as the services run) answers a FastAPI route with a realtime-summary-sized
JSON body; the client process POSTs the realtime hop's request (a ~600-character text) one call
at a time, alternating blocks of httpx and aiohttp calls (ABBA, so machine drift hits both), and
records its own CPU time and the wall time per call. Only the client differs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastapi import FastAPI  # noqa: E402
from pydantic import BaseModel  # noqa: E402


class Hop(BaseModel):
    text: str
    max_summary_tokens: int
    language: str
    request_id: str


app = FastAPI()


@app.post("/internal/summarize")
async def summarize(body: Hop) -> dict:
    return {
        "id": body.request_id,
        "summary": "word " * 40,
        "model": "bench",
        "usage": {"input_tokens": 150, "output_tokens": 48},
        "timings": {"inference_ms": 1.0},
    }


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def block_httpx(client, url: str, body: dict, n: int) -> tuple[float, float]:
    c0, t0 = cpu_s(), time.perf_counter()
    for _ in range(n):
        r = await client.post(url, json=body)
        r.raise_for_status()
    return (cpu_s() - c0) / n * 1000, (time.perf_counter() - t0) / n * 1000


async def block_aiohttp(session, url: str, body: dict, n: int) -> tuple[float, float]:
    c0, t0 = cpu_s(), time.perf_counter()
    for _ in range(n):
        async with session.post(url, json=body) as r:
            await r.read()
            r.raise_for_status()
    return (cpu_s() - c0) / n * 1000, (time.perf_counter() - t0) / n * 1000


async def amain(args) -> dict:
    import aiohttp
    import httpx
    from tqdm import tqdm

    url = f"http://127.0.0.1:{args.port}/internal/summarize"
    body = {
        "text": ("The council approved the budget after a long debate. " * 12)[:600],
        "max_summary_tokens": 48,
        "language": "auto",
        "request_id": "bench",
    }
    out = {"httpx": [], "aiohttp": []}
    async with httpx.AsyncClient() as hx, aiohttp.ClientSession() as ah:
        run = {"httpx": lambda n: block_httpx(hx, url, body, n), "aiohttp": lambda n: block_aiohttp(ah, url, body, n)}
        for name in run:  # warm up connections and code paths
            await run[name](50)
        for r in tqdm(range(args.rounds), desc="ABBA rounds", unit="round"):
            for name in ("httpx", "aiohttp") if r % 2 == 0 else ("aiohttp", "httpx"):
                out[name].append(await run[name](args.calls))
    res: dict = {"calls_per_block": args.calls, "rounds": args.rounds, "command": "make bench-http-client"}
    for name, blocks in out.items():
        res[name] = {
            "client_cpu_ms_per_call": round(statistics.median(b[0] for b in blocks), 3),
            "wall_ms_per_call": round(statistics.median(b[1] for b in blocks), 3),
            "blocks": [[round(c, 3), round(w, 3)] for c, w in blocks],
        }
    res["httpx_over_aiohttp_client_cpu"] = round(
        res["httpx"]["client_cpu_ms_per_call"] / res["aiohttp"]["client_cpu_ms_per_call"], 2
    )
    res["httpx_over_aiohttp_wall"] = round(res["httpx"]["wall_ms_per_call"] / res["aiohttp"]["wall_ms_per_call"], 2)
    return res


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["httpx", "aiohttp"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = range(len(names))
    cpu = [res[n]["client_cpu_ms_per_call"] for n in names]
    wall = [res[n]["wall_ms_per_call"] for n in names]
    ax.bar([i - 0.2 for i in x], cpu, 0.4, label="client CPU per call")
    ax.bar([i + 0.2 for i in x], wall, 0.4, label="wall time per call (incl. server)")
    for i in x:
        ax.annotate(f"{cpu[i]:.2f}", (i - 0.2, cpu[i]), ha="center", va="bottom", fontsize=8)
        ax.annotate(f"{wall[i]:.2f}", (i + 0.2, wall[i]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), names)
    ax.set_ylabel("ms")
    ax.set_title(
        f"One internal hop (POST ~600 chars), median of {res['rounds']} blocks × {res['calls_per_block']}", fontsize=9
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--calls", type=int, default=400, help="calls per block")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "http_client.json"))
    args = ap.parse_args()
    import tempfile

    from devstack import PORTS, Proc, child_env, http_ok, wait_until

    args.port = PORTS.one()  # the bench server's
    log = Path(tempfile.mkdtemp(prefix="precis-http-client-")) / "server.log"
    server = Proc(
        "bench-server",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.http_client_bench:app",
            "--port",
            str(args.port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        child_env(),
        log,
    )
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{args.port}/docs"), 30, "bench server", server, 0.3)
        res = asyncio.run(amain(args))
    finally:
        server.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    plot(res, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, dict)}, indent=2))
    for n in ("httpx", "aiohttp"):
        print(n, {k: v for k, v in res[n].items() if k != "blocks"})
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
