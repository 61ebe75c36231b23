"""Realtime benchmark: `make bench-realtime` -> bench/results/realtime.json + realtime.png.

One run, one machine, the same prompts (the opening of each eval-set document, cut at a sentence
end near --prompt-chars characters) and the same --max-tokens for every measurement. Everything
compared is started first and stays up for the whole run (an idle server takes no CPU):
Triton with the default model repository behind realtime_svc and the gateway; the same
repository with the dynamic_batching block removed; FP32 transformers
(PRECIS_MODEL_ENGINE=transformers, dtype float32); two peers on the same GGUF file and the same
thread count, both over /v1/chat/completions (greedy, same messages, max_tokens and repetition
penalty): llama.cpp's own `llama-server` (--parallel 8 slots, continuous batching; built once
into the cache by scripts/build_llama_server.sh from the llama.cpp the llama-cpp-python sdist
vendors), the peer a CPU user after throughput would pick; and llama-cpp-python's server, which
answers one request at a time (kept as a second row).

 (a) end to end (HTTP through gateway -> realtime_svc -> Triton), directly against Triton
     (gRPC) and against the llama.cpp server, at concurrency 1, 4, 8, 16: p50/p95/p99 latency
     and summaries/s (the plot);
 (b) + (d) at concurrency 8, interleaved blocks: each round runs a block of requests for
     batching on, batching off, ours end to end, llama-server and llama-cpp-python's server, the
     order reversing every round (ABBA), so the VM's drift (it slowed ~1.8x over one afternoon)
     hits every arm alike. batching_speedup_c8, vs_llama_server_throughput_c8 and
     vs_llamacpp_throughput_c8 come from these blocks;
 (c) + (d) at concurrency 1, interleaved single requests: FP32 transformers vs our default engine
     (quantized_speedup_c1, with ROUGE-L of both from bench/results/eval.json, `make eval`), and
     ours end to end vs each peer (vs_llama_server_p50_c1, vs_llamacpp_p50_c1).

Gateway overhead: an interleaved probe at concurrency 1 sends each prompt direct and through the
gateway back to back (ABBA), with the hops' CPU time per request; repeated with max_tokens=1
(prefill only), where the model's time is smallest.

Closed loop: C clients, each sends its next request when the previous one returns.
summaries/s = requests / wall time. Every component runs on this machine, on private ports
(allocated by devstack.PORTS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.eval import load_items  # noqa: E402
from common.triton_client import SummarizerClient  # noqa: E402
from devstack import PORTS, Proc, TritonPorts, child_env, http_ok, wait_until  # noqa: E402
from devstack import start_triton as start_triton_server  # noqa: E402

PY = sys.executable
LEVELS = (1, 4, 8, 16)
REQUESTS = {1: 12, 4: 24, 8: 32, 16: 48}


def log(msg: str) -> None:
    tqdm.write(f"[bench] {msg}")


# --------------------------------------------------------------------------- prompts


def make_prompts(chars: int) -> list[dict]:
    out = []
    for it in load_items():
        doc = it["document"].strip()
        if len(doc) > chars:
            cut = doc[: int(chars * 1.5)]
            ends = [m.end() for m in re.finditer(r"[.!?。！？][\"'”’）)]?(?=\s|$)|[。！？]", cut)]
            good = [e for e in ends if e >= chars * 0.5]
            doc = cut[: good[0] if good and good[0] <= chars else (good[0] if good else chars)].strip()
        out.append({"id": it["id"], "language": it["language"], "text": doc})
    # interleave zh among en so every level sees both
    en = [p for p in out if p["language"] == "en"]
    zh = [p for p in out if p["language"] == "zh"]
    mixed, step = [], max(1, len(en) // max(1, len(zh)))
    for i, p in enumerate(en):
        mixed.append(p)
        if zh and (i + 1) % step == 0:
            mixed.append(zh.pop(0))
    return mixed + zh


# --------------------------------------------------------------------------- processes


def proc(name: str, argv: list, env: dict, logdir: Path) -> Proc:
    """devstack.Proc with its log in ``logdir`` (its CPU time at hand: ``cpu_s()``)."""
    return Proc(name, argv, env, logdir / f"{name}.log", stop_timeout=40)


def wait_http(url: str, proc: Proc, timeout: float) -> None:
    wait_until(lambda: http_ok(url), timeout, url, proc)


def base_env(**extra: str) -> dict:
    return child_env(PRECIS_ENV="local", PRECIS_LOG_LEVEL="WARNING", **extra)


def strip_block(config: str, name: str) -> str:
    """config.pbtxt without the top-level block ``name { ... }`` (brace matched)."""
    m = re.search(rf"^{name}\s*{{", config, re.MULTILINE)
    if not m:
        return config
    depth, i = 0, m.end() - 1
    while i < len(config):
        depth += {"{": 1, "}": -1}.get(config[i], 0)
        i += 1
        if depth == 0:
            break
    return config[: m.start()] + config[i:]


def model_repo(tmp: Path, batching: bool) -> Path:
    if batching:
        return ROOT / "model_repository"
    repo = tmp / "repo-nobatch"
    shutil.copytree(ROOT / "model_repository", repo, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = repo / "summarizer" / "config.pbtxt"
    cfg.write_text(strip_block(cfg.read_text(), "dynamic_batching"))
    return repo


# Triton with the default repository (and realtime_svc, gateway), the same repository with
# dynamic batching off, and FP32 transformers, each on its own ports. All three stay up together
# so their ratios come from interleaved measurements (see the module docstring).
def start_triton(tmp: Path, name: str, repo: Path, ports: TritonPorts, **env_extra: str) -> Proc:
    env = base_env(PRECIS_TRITON_MODEL_REPOSITORY=str(repo), **env_extra)
    return start_triton_server(ports, env, tmp / f"{name}.log", 300, name=name)


def triton_client(ports: TritonPorts) -> SummarizerClient:
    return SummarizerClient(ports.grpc_url, "summarizer")


def start_services(tmp: Path, triton: TritonPorts) -> list[Proc]:
    """realtime_svc on ``triton``, the gateway in front of it (its URL: ``gateway_url``)."""
    rt_port, gw_port = PORTS.one(), PORTS.one()
    rt = proc(
        "realtime_svc",
        [PY, "-m", "realtime_svc"],
        base_env(PRECIS_PORT=str(rt_port), PRECIS_TRITON_GRPC_URL=triton.grpc_url),
        tmp,
    )
    rt.port = rt_port
    gw = proc(
        "gateway",
        [PY, "-m", "gateway"],
        base_env(
            PRECIS_PORT=str(gw_port),
            PRECIS_REALTIME_URL=f"http://127.0.0.1:{rt_port}",
            PRECIS_ASYNC_URL=f"http://127.0.0.1:{PORTS.one()}",  # nothing listens: realtime only
            PRECIS_RATE_LIMIT_PER_MINUTE="1000000",
            PRECIS_RATE_LIMIT_BYTES_PER_MINUTE="1000000000000",
        ),
        tmp,
    )
    gw.port = gw_port
    wait_http(f"http://127.0.0.1:{rt_port}/readyz", rt, 60)
    wait_http(f"http://127.0.0.1:{gw_port}/healthz", gw, 60)
    return [rt, gw]


def gateway_url(services: list[Proc]) -> str:
    return f"http://127.0.0.1:{services[1].port}"


# --------------------------------------------------------------------------- load


def stats(lat: list[float], wall: float, errors: int) -> dict:
    q = sorted(lat)

    def pct(p: float) -> float:
        if not q:
            return float("nan")
        k = min(len(q) - 1, max(0, int(round(p / 100 * len(q) + 0.5)) - 1))  # nearest rank
        return q[k]

    return {
        "requests": len(lat) + errors,
        "ok": len(lat),
        "errors": errors,
        "p50_ms": round(statistics.median(q) * 1000, 1) if q else None,
        "p95_ms": round(pct(95) * 1000, 1),
        "p99_ms": round(pct(99) * 1000, 1),
        "mean_ms": round(statistics.fmean(q) * 1000, 1) if q else None,
        "summaries_per_s": round(len(lat) / wall, 3),
        "wall_s": round(wall, 2),
    }


async def drive(
    call, prompts: list[dict], concurrency: int, n: int, desc: str, start: int = 0
) -> tuple[list[float], float, int]:
    """Closed loop: ``concurrency`` clients send prompts ``start``.. until ``n`` requests are
    done; each client sends its next request when the previous one returns. -> (latencies,
    wall seconds, errors)."""
    work = list(range(start, start + n))
    lat: list[float] = []
    errors = 0
    bar = tqdm(total=n, desc=desc, unit="req", leave=False)

    async def client() -> None:
        nonlocal errors
        while work:
            i = work.pop(0)
            t0 = time.perf_counter()
            try:
                await call(prompts[i % len(prompts)])
            except Exception as exc:  # noqa: BLE001
                errors += 1
                log(f"{desc}: error {exc!r}"[:300])
            else:
                lat.append(time.perf_counter() - t0)
            bar.update(1)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    bar.close()
    return lat, wall, errors


async def closed_loop(call, prompts: list[dict], concurrency: int, n: int, desc: str) -> dict:
    lat, wall, errors = await drive(call, prompts, concurrency, n, desc)
    st = stats(lat, wall, errors)
    log(
        f"{desc}: p50 {st['p50_ms']} ms p95 {st['p95_ms']} ms p99 {st['p99_ms']} ms "
        f"{st['summaries_per_s']} summaries/s errors {errors}"
    )
    return st


async def interleaved_blocks(
    arms: dict, prompts: list[dict], concurrency: int, per_block: int, rounds: int, desc: str
) -> dict:
    """Each round runs one closed-loop block of ``per_block`` requests per arm, on the same
    prompts, in ABBA order (the order reverses every round); an arm's figures pool its blocks.
    On a VM whose speed drifted ~1.8x over an afternoon, phases minutes apart made ratios
    swing (batching on/off: 1.76 vs 1.18 on two runs); interleaving cancels the drift."""
    names = list(arms)
    pooled = {n: ([], 0.0, 0) for n in names}
    bar = tqdm(total=rounds * len(names), desc=desc, unit="block", leave=False)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            lat, wall, err = await drive(
                arms[name], prompts, concurrency, per_block, f"{desc}: {name}", start=r * per_block
            )
            pl, pw, pe = pooled[name]
            pooled[name] = (pl + lat, pw + wall, pe + err)
            bar.update(1)
    bar.close()
    out = {n: stats(*pooled[n]) | {"blocks": rounds, "requests_per_block": per_block} for n in names}
    log(f"{desc}: " + ", ".join(f"{n} {o['summaries_per_s']}/s p50 {o['p50_ms']} ms" for n, o in out.items()))
    return out


async def abba_rounds(arms: dict, prompts: list[dict], rounds: int, desc: str) -> dict[str, list[float]]:
    """Concurrency 1: each round sends the same prompt to every arm back to back, the order
    reversing each round (ABBA). -> each arm's latencies (seconds), round by round."""
    names = list(arms)
    lat: dict[str, list[float]] = {n: [] for n in names}
    for r in tqdm(range(rounds), desc=desc, unit="round", leave=False):
        p = prompts[r % len(prompts)]
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            await arms[name](p)
            lat[name].append(time.perf_counter() - t0)
    return lat


async def interleaved_single(arms: dict, prompts: list[dict], rounds: int, desc: str) -> dict:
    """``abba_rounds`` -> per-arm p50 and the median of per-prompt ratios (first arm / second)."""
    lat = await abba_rounds(arms, prompts, rounds, desc)
    out = {n: {"rounds": rounds, "p50_ms": round(statistics.median(v) * 1000, 1)} for n, v in lat.items()}
    a, b = list(arms)[:2]
    out[f"median_ratio_{a}_over_{b}"] = round(statistics.median(x / y for x, y in zip(lat[a], lat[b], strict=True)), 3)
    log(f"{desc}: {out}")
    return out


def direct_caller(client: SummarizerClient, max_tokens: int):
    async def call(p: dict) -> None:
        await client.summarize(p["text"], max_tokens, "auto", timeout_s=600, request_id="")

    return call


# HTTP load comes from aiohttp, for the gateway and the llama.cpp server alike: an httpx call
# cost ~2 ms of client CPU on this machine (0.3 ms with aiohttp), which the overhead probe would
# have charged to the gateway path.
def http_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=3.0), timeout=aiohttp.ClientTimeout(total=600)
    )


async def post_json(http: aiohttp.ClientSession, url: str, body: dict, headers: dict | None = None) -> None:
    async with http.post(url, json=body, headers=headers) as r:
        data = await r.read()
        if r.status != 200:
            raise RuntimeError(f"{r.status} {data[:200]!r}")


def gateway_caller(http: aiohttp.ClientSession, url: str, max_tokens: int):
    async def call(p: dict) -> None:
        await post_json(
            http,
            f"{url}/v1/summaries",
            {"text": p["text"], "mode": "realtime", "max_summary_tokens": max_tokens},
            {"Authorization": "Bearer precis-dev-key"},
        )

    return call


def llamacpp_caller(http: aiohttp.ClientSession, max_tokens: int, port: int):
    """An OpenAI-compatible chat call: llama-server and llama-cpp-python's server take the same."""
    from summarizer_engine import CJK_LANGS, build_messages, detect_language

    async def call(p: dict) -> None:
        lang = detect_language(p["text"])
        await post_json(
            http,
            f"http://127.0.0.1:{port}/v1/chat/completions",
            {
                "messages": build_messages(p["text"], lang),
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "top_k": 1,
                "repeat_penalty": 1.0 if lang in CJK_LANGS else 1.1,
                "stream": False,
            },
        )

    return call


async def interleaved_probe(
    direct, gateway, prompts: list[dict], rounds: int, desc: str, hops: list[Proc] | None = None
) -> dict:
    """Alternate direct/gateway calls on the same prompt (ABBA order) at concurrency 1. With
    ``hops`` (realtime_svc, gateway), also the CPU time each of them spent per gateway request."""
    cpu0 = {h.name: h.cpu_s() for h in hops or []}
    lat = await abba_rounds({"direct": direct, "gateway": gateway}, prompts, rounds, desc)
    d_lat, g_lat = lat["direct"], lat["gateway"]
    diffs = [g - d for g, d in zip(g_lat, d_lat, strict=True)]
    out = {
        "pairs": rounds,
        "direct_p50_ms": round(statistics.median(d_lat) * 1000, 2),
        "gateway_p50_ms": round(statistics.median(g_lat) * 1000, 2),
        "p50_difference_ms": round((statistics.median(g_lat) - statistics.median(d_lat)) * 1000, 2),
        "paired_median_ms": round(statistics.median(diffs) * 1000, 2),
        "paired_p90_ms": round(sorted(diffs)[int(0.9 * (len(diffs) - 1))] * 1000, 2),
    }
    for h in hops or []:
        out[f"{h.name}_cpu_ms_per_request"] = round((h.cpu_s() - cpu0[h.name]) * 1000 / rounds, 2)
    log(f"{desc}: {out}")
    return out


async def run_levels(call, prompts, name: str, levels=LEVELS, warm: int = 2) -> dict:
    for p in prompts[:warm]:
        await call(p)
    out = {}
    for c in levels:
        out[str(c)] = await closed_loop(call, prompts, c, REQUESTS[c], f"{name} c={c}")
    return out


LLAMA_SERVER_SLOTS = 8  # the issue's comparison: --parallel 8, the c=8 level


def llama_server_bin() -> Path:
    return Path(os.environ.get("PRECIS_CACHE", Path.home() / ".cache" / "precis")) / "bin" / "llama-server"


def served_weights(model: str) -> str:
    """The GGUF our engine really serves: with the default llamacpp_weights=f16 it converts the
    Q4_1 file once into $PRECIS_CACHE/models/<stem>.<size>.<mtime>.f16.gguf (llamacpp_engine.py
    _weights_file) when Triton loads. The peers get that same file, so they compute on the same
    weights in the same storage; the Q4_1 original only when no conversion exists."""
    stem = Path(model).stem
    found = sorted((llama_server_bin().parent.parent / "models").glob(f"{stem}.*.f16.gguf"), key=os.path.getmtime)
    return str(found[-1]) if found else model


def llama_server_argv(model: str, port: int, threads: str, ctx_per_slot: int = 2048) -> list[str]:
    # The context is shared by the slots: each gets ctx/parallel tokens, as much as our engine's
    # max_input_tokens (2048) allows a request. Continuous batching is llama-server's default,
    # spelled out so the comparison says what it compares.
    return [
        str(llama_server_bin()),
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--threads",
        threads,
        "--threads-batch",
        threads,
        "--parallel",
        str(LLAMA_SERVER_SLOTS),
        "--cont-batching",
        "--ctx-size",
        str(ctx_per_slot * LLAMA_SERVER_SLOTS),
        "--no-webui",
        "--log-disable",
    ]


# --------------------------------------------------------------------------- machine bounds


def machine_bounds() -> dict:
    import numpy as np
    import torch

    out: dict = {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                out["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    reps, t0 = 10, time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    out["fp32_gemm_gflops"] = round(2 * n**3 * reps / (time.perf_counter() - t0) / 1e9, 1)
    x = np.ones(256 * 1024 * 1024 // 8)  # 256 MiB
    y = np.empty_like(x)
    np.copyto(y, x)
    reps, t0 = 5, time.perf_counter()
    for _ in range(reps):
        np.copyto(y, x)
    # a copy reads and writes every byte
    out["mem_copy_gb_s"] = round(2 * x.nbytes * reps / (time.perf_counter() - t0) / 1e9, 1)
    return out


# --------------------------------------------------------------------------- main


def ratio(a, b) -> float | None:
    return round(a / b, 3) if a and b else None


async def amain(args) -> dict:
    from summarizer_engine import default_model_path

    prompts = make_prompts(args.prompt_chars)
    mt = args.max_tokens
    tmp = Path(tempfile.mkdtemp(prefix="precis-bench-"))
    res: dict = {
        "max_tokens": mt,
        "prompt_chars": args.prompt_chars,
        "prompts": len(prompts),
        "requests_per_level": REQUESTS,
        "logs": str(tmp),
    }
    log(f"{len(prompts)} prompts (eval-set openings, ~{args.prompt_chars} chars), max_tokens={mt}; logs in {tmp}")
    res["machine"] = machine_bounds()
    log(f"machine: {res['machine']}")
    phases = tqdm(total=5, desc="bench-realtime phases", unit="phase")

    # Everything compared stays up for the whole run (idle servers take no CPU): ours with the
    # default repository (Triton + realtime_svc + gateway), the same repository with dynamic
    # batching off, FP32 transformers, and llama-cpp-python's server on the same GGUF file.
    port, ls_port = PORTS.one(), PORTS.one()
    default, nobatch_ports, fp32_ports = TritonPorts.allocate(), TritonPorts.allocate(), TritonPorts.allocate()
    threads = str(len(os.sched_getaffinity(0)))
    procs: list[Proc] = []
    clients: list[SummarizerClient] = []
    try:
        procs.append(start_triton(tmp, "triton-default", model_repo(tmp, True), default))
        # static scheduler too: in-flight batching would batch in the engine loop with or
        # without the dynamic batcher, and this arm measures generation without batching
        procs.append(
            start_triton(tmp, "triton-nobatch", model_repo(tmp, False), nobatch_ports, PRECIS_MODEL_SCHEDULER="static")
        )
        procs.append(
            start_triton(
                tmp,
                "triton-transformers-fp32",
                model_repo(tmp, True),
                fp32_ports,
                PRECIS_MODEL_ENGINE="transformers",
                PRECIS_MODEL_DTYPE="float32",
            )
        )
        weights = served_weights(default_model_path())  # Triton above has converted it by now
        res["peer_weights"] = Path(weights).name
        srv = proc(
            "llamacpp-server",
            [
                PY,
                "-m",
                "llama_cpp.server",
                "--model",
                weights,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "4096",
                "--n_threads",
                threads,
                "--n_threads_batch",
                threads,
                "--verbose",
                "False",
            ],
            base_env(),
            tmp,
        )
        procs.append(srv)
        ls = proc("llama-server", llama_server_argv(weights, ls_port, threads), base_env(), tmp)
        procs.append(ls)
        wait_http(f"http://127.0.0.1:{port}/v1/models", srv, 120)
        wait_http(f"http://127.0.0.1:{ls_port}/health", ls, 120)
        services = start_services(tmp, default)
        gw_url = gateway_url(services)
        procs.extend(services)
        ours, nobatch, fp32 = (triton_client(o) for o in (default, nobatch_ports, fp32_ports))
        clients = [ours, nobatch, fp32]
        phases.update(1)

        async with http_session() as http:
            direct, gateway = direct_caller(ours, mt), gateway_caller(http, gw_url, mt)
            llama = llamacpp_caller(http, mt, port)
            lserver = llamacpp_caller(http, mt, ls_port)
            for call in (direct_caller(nobatch, mt), direct_caller(fp32, mt), llama, lserver):
                await call(prompts[0])  # first request pays one-time costs
            # (a) latency and throughput per concurrency level (for the plot and the tables)
            res["direct"] = await run_levels(direct, prompts, "triton direct")
            res["gateway"] = await run_levels(gateway, prompts, "gateway e2e")
            res["llama_server"] = await run_levels(lserver, prompts, "llama-server")
            res["llamacpp_server"] = await run_levels(llama, prompts, "llama-cpp-python server")
            phases.update(1)
            # gateway overhead: interleaved pairs, with the hops' CPU per request
            res["overhead_probe"] = await interleaved_probe(
                direct, gateway, prompts, args.probe_rounds, f"overhead probe max_tokens={mt}", services
            )
            res["overhead_probe_1_token"] = await interleaved_probe(
                direct_caller(ours, 1),
                gateway_caller(http, gw_url, 1),
                prompts,
                args.probe_rounds * 2,
                "overhead probe max_tokens=1",
                services,
            )
            phases.update(1)
            # (b) + (d) at concurrency 8, interleaved blocks: batching on vs off (direct), ours
            # end to end vs the llama.cpp server
            res["c8_interleaved"] = await interleaved_blocks(
                {
                    "batching_on": direct,
                    "batching_off": direct_caller(nobatch, mt),
                    "gateway": gateway,
                    "llama_server": lserver,
                    "llamacpp_server": llama,
                },
                prompts,
                8,
                args.block_requests,
                args.block_rounds,
                "c=8 interleaved",
            )
            phases.update(1)
            # (c) + (d) at concurrency 1, interleaved single requests
            res["c1_vs_llamacpp"] = await interleaved_single(
                {"gateway": gateway, "llama_server": lserver, "llamacpp_server": llama},
                prompts,
                args.single_rounds,
                "c=1 ours vs the llama.cpp servers",
            )
            res["c1_vs_fp32"] = await interleaved_single(
                {"fp32": direct_caller(fp32, mt), "ours": direct}, prompts, args.single_rounds, "c=1 fp32 vs ours"
            )
            phases.update(1)
    finally:
        for c in clients:
            await c.close()
        for p in reversed(procs):
            p.stop()
    phases.close()

    # ratios, each from measurements interleaved in time
    blocks = res["c8_interleaved"]
    res["direct_no_batching"] = {"8": blocks["batching_off"]}
    res["batching_speedup_c8"] = ratio(
        blocks["batching_on"]["summaries_per_s"], blocks["batching_off"]["summaries_per_s"]
    )
    res["vs_llama_server_throughput_c8"] = ratio(
        blocks["gateway"]["summaries_per_s"], blocks["llama_server"]["summaries_per_s"]
    )
    res["vs_llama_server_p50_c1"] = ratio(
        res["c1_vs_llamacpp"]["gateway"]["p50_ms"], res["c1_vs_llamacpp"]["llama_server"]["p50_ms"]
    )
    res["vs_llamacpp_throughput_c8"] = ratio(
        blocks["gateway"]["summaries_per_s"], blocks["llamacpp_server"]["summaries_per_s"]
    )
    res["vs_llamacpp_p50_c1"] = ratio(
        res["c1_vs_llamacpp"]["gateway"]["p50_ms"], res["c1_vs_llamacpp"]["llamacpp_server"]["p50_ms"]
    )
    res["quantized_speedup_c1"] = ratio(res["c1_vs_fp32"]["fp32"]["p50_ms"], res["c1_vs_fp32"]["ours"]["p50_ms"])
    # the same ratios from the per-level runs (phases minutes apart), for reference
    g, d, ll = res["gateway"], res["direct"], res["llamacpp_server"]
    res["levels_vs_llamacpp_throughput_c8"] = ratio(g["8"]["summaries_per_s"], ll["8"]["summaries_per_s"])
    res["levels_vs_llamacpp_p50_c1"] = ratio(g["1"]["p50_ms"], ll["1"]["p50_ms"])
    # p50 through gateway + realtime_svc - p50 direct, from the interleaved probe (same prompts and
    # max_tokens as everything else); the per-level difference is kept for reference only.
    res["gateway_overhead_p50_ms"] = res["overhead_probe"]["p50_difference_ms"]
    res["gateway_overhead_paired_median_ms"] = res["overhead_probe"]["paired_median_ms"]
    res["gateway_overhead_1_token_p50_ms"] = res["overhead_probe_1_token"]["p50_difference_ms"]
    res["gateway_minus_direct_levels_c1_ms"] = round(g["1"]["p50_ms"] - d["1"]["p50_ms"], 2)
    ev_path = ROOT / "bench" / "results" / "eval.json"
    if ev_path.exists():
        ev = json.loads(ev_path.read_text())
        v = ev["variants"]
        # the variant the benchmark ran (config.pbtxt default: llama.cpp, f16 storage of Q4_1 values)
        q, f = v.get(args.engine_variant), v.get("transformers-fp32")
        res["quantized_variant"] = args.engine_variant
        if q and f:
            res["quantized_rougeL"] = q["rouge"]["all"]["rougeL"]
            res["fp32_rougeL"] = f["rouge"]["all"]["rougeL"]
            res["quantized_rougeL_delta"] = round(q["rouge"]["all"]["rougeL"] - f["rouge"]["all"]["rougeL"], 2)
            res["rouge_source"] = f"{ev_path.relative_to(ROOT)} ({ev['items']} items, max_tokens {ev['max_tokens']})"
    res["targets"] = {
        "batching_speedup_c8 >= 2": (res["batching_speedup_c8"] or 0) >= 2,
        "quantized_speedup_c1 >= 1.5": (res["quantized_speedup_c1"] or 0) >= 1.5,
        "quantized_rougeL_delta >= -1": res.get("quantized_rougeL_delta") is not None
        and res["quantized_rougeL_delta"] >= -1,
        "vs_llama_server_throughput_c8 >= 1": (res["vs_llama_server_throughput_c8"] or 0) >= 1,
        "vs_llama_server_p50_c1 <= 1.2": (res["vs_llama_server_p50_c1"] or 99) <= 1.2,
        "vs_llamacpp_throughput_c8 >= 2": (res["vs_llamacpp_throughput_c8"] or 0) >= 2,
        "vs_llamacpp_p50_c1 <= 1.5": (res["vs_llamacpp_p50_c1"] or 99) <= 1.5,
        "gateway_overhead_p50_ms <= 5": res["gateway_overhead_p50_ms"] <= 5,
    }
    shutil.rmtree(tmp / "repo-nobatch", ignore_errors=True)
    return res


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    series = [
        ("gateway", "ours, end to end (gateway)", "o-"),
        ("direct", "ours, direct to Triton", "s--"),
        ("llama_server", "llama-server (--parallel 8)", "v-"),
        ("llamacpp_server", "llama-cpp-python server", "^-"),
    ]
    for key, label, style in series:
        cs = sorted(int(c) for c in res[key])
        ax1.plot(cs, [res[key][str(c)]["p50_ms"] for c in cs], style, label=f"{label} p50")
        ax1.plot(cs, [res[key][str(c)]["p95_ms"] for c in cs], style, alpha=0.35, label=f"{label} p95")
        ax2.plot(cs, [res[key][str(c)]["summaries_per_s"] for c in cs], style, label=label)
    # the interleaved c=8 blocks the ratios come from, beside the per-level points
    arms = [
        ("batching_on", "ours direct, batching on", "bD"),
        ("batching_off", "ours direct, batching off", "kx"),
        ("gateway", "ours end to end", "o"),
        ("llama_server", "llama-server", "mv"),
        ("llamacpp_server", "llama-cpp-python server", "g^"),
    ]
    for i, (key, label, style) in enumerate(arms):
        v = res["c8_interleaved"][key]["summaries_per_s"]
        ax2.plot([8.6 + 0.25 * i], [v], style, markersize=8, markerfacecolor="none", label=f"{label} (interleaved c=8)")
    for ax in (ax1, ax2):
        ax.set_xlabel("concurrency")
        ax.set_xticks(list(LEVELS))
        ax.grid(alpha=0.3)
    ax1.set_ylabel("latency (ms)")
    ax1.set_title("Latency vs concurrency")
    ax2.set_ylabel("summaries / s")
    ax2.set_title("Throughput vs concurrency")
    ax1.legend(fontsize=7)
    ax2.set_ylim(bottom=0)
    ax2.legend(fontsize=6.5, loc="lower right")
    fig.suptitle(f"Précis realtime, {res['machine']['cpus']} CPU cores, max_tokens={res['max_tokens']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--prompt-chars", type=int, default=600)
    ap.add_argument("--probe-rounds", type=int, default=30, help="pairs in the gateway-overhead probe")
    ap.add_argument("--block-rounds", type=int, default=4, help="rounds of interleaved c=8 blocks")
    ap.add_argument("--block-requests", type=int, default=16, help="requests per c=8 block")
    ap.add_argument("--single-rounds", type=int, default=16, help="rounds of interleaved c=1 requests")
    ap.add_argument(
        "--engine-variant",
        default="llamacpp-f16",
        help="bench/eval.py variant whose ROUGE-L stands for the engine under test",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "realtime.json"))
    ap.add_argument("--smoke", action="store_true", help="2 requests per level: check the harness, not the numbers")
    args = ap.parse_args()
    if args.smoke:
        for c in REQUESTS:
            REQUESTS[c] = 2
        args.max_tokens = 4
        args.probe_rounds = 2
        args.block_rounds, args.block_requests, args.single_rounds = 2, 8, 2
    t0 = time.monotonic()
    res = asyncio.run(amain(args))
    res["bench_wall_s"] = round(time.monotonic() - t0, 1)
    res["command"] = "make bench-realtime"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    plot(res, out.with_suffix(".png"))
    keys = [
        "batching_speedup_c8",
        "quantized_speedup_c1",
        "quantized_rougeL_delta",
        "vs_llama_server_throughput_c8",
        "vs_llama_server_p50_c1",
        "vs_llamacpp_throughput_c8",
        "vs_llamacpp_p50_c1",
        "gateway_overhead_p50_ms",
        "gateway_overhead_paired_median_ms",
        "gateway_overhead_1_token_p50_ms",
    ]
    print(json.dumps({k: res.get(k) for k in keys}, indent=2))
    print(json.dumps(res["targets"], indent=2))
    print(f"wrote {out} and {out.with_suffix('.png')} in {res['bench_wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
