"""In-flight vs static batching: `make bench-inflight` -> bench/results/inflight.json + inflight.png.

One Triton serves two copies of model_repository/summarizer side by side, identical but for the
scheduler (summarizer_engine/config.py ``scheduler``) and the queue delay each is tuned with:

* ``summarizer_inflight``: the default config (scheduler=inflight, decoupled, no queue delay);
* ``summarizer_static``: scheduler=static with the 100 ms queue delay static batching used (one
  batched generate per execute(), formed by the dynamic batcher: the model as it was before).

An idle model takes no CPU (its engine loop waits on a condition), so the two stay loaded
together and are measured in turns on the same machine state. Both are called through
common.triton_client.SummarizerClient (gRPC streaming, as realtime_svc and the worker call it).

1. Capacity: closed loop, --capacity-clients clients, --capacity-requests requests per model,
   each request's max_tokens drawn from --budgets: completed requests / wall time. The open-loop
   rate is --load (0.8) times the *smaller* of the two capacities, so neither arm is overloaded
   (a rate above static's capacity would grow its queue without bound and flatter the ratio).
2. Open loop: Poisson arrivals at that rate (exponential gaps, seeded), every request with its
   own max_tokens from --budgets; latency = answer time - scheduled send time (a late send counts
   against the server). Blocks of --block-requests requests alternate between the two models,
   A B A B ... (the order swapping every round), each block on the same arrival times and
   budgets as its partner, and each drains before the next starts: the machine's drift (shared
   cores) hits both arms alike. p50 over all blocks of an arm; inflight_p50_ratio_open_loop =
   p50(inflight) / p50(static), target <= 0.7.

Why in-flight wins here: with budgets mixed 16..128, a static batch answers every request when
its longest row ends, and a request arriving meanwhile waits for the whole batch before it even
starts; in-flight, a request joins the running batch at the next decode step and is answered
when its own tokens are done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.realtime_bench import make_prompts  # noqa: E402
from common.triton_client import SummarizerClient, TritonFailure  # noqa: E402
from devstack import TritonPorts, child_env, start_triton  # noqa: E402

ARMS = {"inflight": "summarizer_inflight", "static": "summarizer_static"}
STATIC_QUEUE_DELAY_US = 100_000  # what config.pbtxt used with static batching (its comment says why)


def log(msg: str) -> None:
    print(f"[bench-inflight] {msg}", flush=True)


def repository(tmp: Path) -> Path:
    """model_repository/ with the summarizer twice: in-flight (as shipped) and static."""
    repo = tmp / "model_repository"
    repo.mkdir()
    src = ROOT / "model_repository" / "summarizer"
    for arm, name in ARMS.items():
        dest = repo / name
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
        cfg = dest / "config.pbtxt"
        text, n1 = re.subn(r'^name: "summarizer"', f'name: "{name}"', cfg.read_text(), flags=re.M)
        text, n2 = re.subn(r'(key: "scheduler" value: \{ string_value: )"[a-z]*"', rf'\1"{arm}"', text)
        n3 = 1
        if arm == "static":
            text, n3 = re.subn(
                r"max_queue_delay_microseconds: \d+", f"max_queue_delay_microseconds: {STATIC_QUEUE_DELAY_US}", text
            )
        assert n1 == n2 == n3 == 1, "config.pbtxt changed shape: update bench/inflight_bench.py"
        cfg.write_text(text)
    return repo


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


async def call(client: SummarizerClient, prompt: dict, budget: int) -> tuple[bool, int]:
    try:
        r = await client.summarize(prompt["text"], budget, prompt["language"], timeout_s=600, request_id="bench")
        return True, r.output_tokens
    except TritonFailure as exc:
        log(f"failed: {exc.kind}: {exc}")
        return False, 0


async def capacity(client: SummarizerClient, prompts: list[dict], budgets: list[int], clients: int) -> dict:
    """Closed loop: ``clients`` workers take the next (prompt, budget) when their last returns."""
    jobs = list(zip(prompts, budgets, strict=True))
    it = iter(jobs)
    ok = tokens = 0

    async def worker() -> None:
        nonlocal ok, tokens
        for prompt, budget in it:
            good, n = await call(client, prompt, budget)
            ok += good
            tokens += n

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - t0
    return {"requests": len(jobs), "ok": ok, "wall_s": round(wall, 2), "rps": ok / wall, "tokens_per_s": tokens / wall}


async def open_loop_block(client: SummarizerClient, plan: list[tuple[float, dict, int]]) -> list[dict]:
    """Send each request at its offset (s from the block start); wait for every answer."""
    t0 = time.perf_counter()

    async def one(at: float, prompt: dict, budget: int) -> dict:
        delay = at - (time.perf_counter() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        good, n = await call(client, prompt, budget)
        return {
            "budget": budget,
            "ok": good,
            "output_tokens": n,
            "latency_s": time.perf_counter() - t0 - at,
        }

    return list(await asyncio.gather(*(one(*p) for p in plan)))


async def amain(args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    prompts = make_prompts(args.prompt_chars)
    tmp = Path(tempfile.mkdtemp(prefix="bench-inflight-"))
    repo = repository(tmp)
    ports = TritonPorts.allocate()
    env = child_env(PRECIS_ENV="local", PRECIS_LOG_LEVEL="WARNING", PRECIS_TRITON_MODEL_REPOSITORY=str(repo))
    log(f"starting Triton with {list(ARMS.values())} (log: {tmp / 'triton.log'})")
    triton = start_triton(ports, env, tmp / "triton.log", 600)
    clients = {arm: SummarizerClient(ports.grpc_url, name) for arm, name in ARMS.items()}
    res: dict = {
        "machine": {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(), "load_avg": os.getloadavg()},
        "budgets": args.budgets,
        "prompt_chars": args.prompt_chars,
        "static_queue_delay_us": STATIC_QUEUE_DELAY_US,
        "seed": args.seed,
    }
    try:
        # warm both (first calls after load) so neither block pays a cold start
        for client in clients.values():
            await call(client, prompts[0], 4)

        n = args.capacity_requests
        cap_prompts = [prompts[i % len(prompts)] for i in range(n)]
        cap_budgets = [rng.choice(args.budgets) for _ in range(n)]
        res["capacity"] = {}
        for arm in ["static", "inflight"] if args.seed % 2 else ["inflight", "static"]:
            log(f"capacity, {arm}: closed loop, {args.capacity_clients} clients, {n} requests")
            res["capacity"][arm] = await capacity(clients[arm], cap_prompts, cap_budgets, args.capacity_clients)
            log(f"  {res['capacity'][arm]}")
        cap = min(res["capacity"][a]["rps"] for a in ARMS)
        rate = args.load * cap
        res["arrival_rps"] = rate
        res["load_of_smaller_capacity"] = args.load
        log(f"open loop at {rate:.2f} req/s ({args.load:.0%} of {cap:.2f} req/s)")

        blocks: list[dict] = []
        k = 0
        for rnd in range(args.rounds):
            at, plan = 0.0, []
            for _ in range(args.block_requests):
                at += rng.expovariate(rate)
                plan.append((at, prompts[k % len(prompts)], rng.choice(args.budgets)))
                k += 1
            order = ["inflight", "static"] if rnd % 2 == 0 else ["static", "inflight"]
            for arm in order:
                t0 = time.perf_counter()
                rows = await open_loop_block(clients[arm], plan)
                lat = [r["latency_s"] for r in rows if r["ok"]]
                blocks.append(
                    {
                        "round": rnd,
                        "arm": arm,
                        "requests": len(rows),
                        "ok": sum(r["ok"] for r in rows),
                        "span_s": round(plan[-1][0], 2),
                        "wall_s": round(time.perf_counter() - t0, 2),
                        "p50_s": round(statistics.median(lat), 3) if lat else None,
                        "rows": rows,
                    }
                )
                log(f"round {rnd} {arm}: p50 {blocks[-1]['p50_s']} s, wall {blocks[-1]['wall_s']} s")
        res["blocks"] = blocks
        for arm in ARMS:
            lat = [r["latency_s"] for b in blocks if b["arm"] == arm for r in b["rows"] if r["ok"]]
            by_budget = {}
            for budget in sorted(set(args.budgets)):
                sub = [
                    r["latency_s"]
                    for b in blocks
                    if b["arm"] == arm
                    for r in b["rows"]
                    if r["ok"] and r["budget"] == budget
                ]
                if sub:
                    by_budget[str(budget)] = round(statistics.median(sub), 3)
            res[arm] = {
                "requests": len(lat),
                "failed": sum(not r["ok"] for b in blocks if b["arm"] == arm for r in b["rows"]),
                "p50_s": round(pct(lat, 50), 3),
                "p90_s": round(pct(lat, 90), 3),
                "p99_s": round(pct(lat, 99), 3),
                "mean_s": round(statistics.fmean(lat), 3),
                "p50_by_budget_s": by_budget,
            }
        res["inflight_p50_ratio_open_loop"] = round(res["inflight"]["p50_s"] / res["static"]["p50_s"], 3)
        res["inflight_p90_ratio_open_loop"] = round(res["inflight"]["p90_s"] / res["static"]["p90_s"], 3)
        res["inflight_capacity_ratio"] = round(res["capacity"]["inflight"]["rps"] / res["capacity"]["static"]["rps"], 3)
        res["targets"] = {"inflight_p50_ratio_open_loop <= 0.7": res["inflight_p50_ratio_open_loop"] <= 0.7}
    finally:
        for client in clients.values():
            await client.close()
        triton.stop(timeout=40)
        shutil.rmtree(repo, ignore_errors=True)
    return res


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"inflight": ("tab:blue", "in-flight"), "static": ("tab:gray", "static")}
    for arm, (color, label) in styles.items():
        lat = sorted(r["latency_s"] for b in res["blocks"] if b["arm"] == arm for r in b["rows"] if r["ok"])
        ys = [(i + 1) / len(lat) for i in range(len(lat))]
        ax1.plot(lat, ys, color=color, label=f"{label}: p50 {res[arm]['p50_s']:.2f} s, p90 {res[arm]['p90_s']:.2f} s")
        budgets = sorted(int(b) for b in res[arm]["p50_by_budget_s"])
        offset = -0.2 if arm == "inflight" else 0.2
        ax2.bar(
            [i + offset for i in range(len(budgets))],
            [res[arm]["p50_by_budget_s"][str(b)] for b in budgets],
            width=0.4,
            color=color,
            label=label,
        )
        ax2.set_xticks(range(len(budgets)), [str(b) for b in budgets])
    ax1.set_xlabel("latency (s)")
    ax1.set_ylabel("fraction of requests")
    ax1.set_title(f"Open loop, Poisson {res['arrival_rps']:.2f} req/s: latency CDF")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8, loc="lower right")
    ax2.set_xlabel("max_summary_tokens of the request")
    ax2.set_ylabel("p50 latency (s)")
    ax2.set_title("p50 by budget")
    ax2.grid(alpha=0.3, axis="y")
    ax2.legend(fontsize=8)
    fig.suptitle(
        f"In-flight vs static batching, {res['machine']['cpus']} CPU cores: "
        f"p50 ratio {res['inflight_p50_ratio_open_loop']:.2f} (target <= 0.7)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", type=lambda s: [int(x) for x in s.split(",")], default=[16, 32, 64, 128])
    ap.add_argument("--prompt-chars", type=int, default=600)
    ap.add_argument("--capacity-clients", type=int, default=16)
    ap.add_argument("--capacity-requests", type=int, default=32)
    ap.add_argument("--load", type=float, default=0.8, help="open-loop rate / the smaller capacity")
    ap.add_argument("--rounds", type=int, default=3, help="ABAB rounds (one block per arm each)")
    ap.add_argument("--block-requests", type=int, default=24)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "inflight.json"))
    ap.add_argument("--smoke", action="store_true", help="tiny run: check the harness, not the numbers")
    args = ap.parse_args()
    if args.smoke:
        args.budgets, args.capacity_requests, args.capacity_clients = [4, 8], 4, 4
        args.rounds, args.block_requests = 2, 3
    t0 = time.monotonic()
    res = asyncio.run(amain(args))
    res["bench_wall_s"] = round(time.monotonic() - t0, 1)
    res["command"] = "make bench-inflight"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    plot(res, out.with_suffix(".png"))
    keys = ["arrival_rps", "inflight_p50_ratio_open_loop", "inflight_p90_ratio_open_loop", "inflight_capacity_ratio"]
    print(json.dumps({k: res[k] for k in keys} | {a: {k: v for k, v in res[a].items()} for a in ARMS}, indent=2))
    print(json.dumps(res["capacity"], indent=2))
    print(json.dumps(res["targets"], indent=2))
    print(f"wrote {out} and {out.with_suffix('.png')} in {res['bench_wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
