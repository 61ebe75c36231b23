"""``POST /v1/summaries?dry_run=true``: what a request would cost, creating nothing.

The request goes through the same checks as a real submit (gateway/body.py, the routing, the
realtime path's notify and token limit, async_svc's document limit), then:

* realtime: its tokens; one model call; no ETA (the summary is made within the request, and no
  pace is recorded for it);
* async: the worker's own chunking of the text (common/chunking.py ``chunk_text``, with the
  worker's ``PRECIS_CHUNK_TOKENS``) and its reduce plan (``plan_map_reduce``: the ``ReducePlan``
  worker/mapreduce.py runs, every intermediate summary at its full budget), and an ETA from
  async_svc's ``GET /internal/throughput`` (the workers' recent pace and the calls queued ahead):
  ``(queue ahead + this job's calls) / calls per second``, or null with the reason.

No job, outbox row or Kafka message is written and an ``Idempotency-Key`` is ignored; quotas are
not checked (nothing is stored), so a real submit may still get 429.
"""

from __future__ import annotations

import asyncio

from fastapi import Response
from fastapi.responses import JSONResponse

from common.chunking import chunk_text, plan_map_reduce
from common.problems import invalid_body
from common.schemas import (
    Estimate,
    Mode,
    SummaryRequest,
    ThroughputReport,
    realtime_too_long_problem,
    text_size_problem,
)
from common.tokenization import INLINE_TOKENIZE_CHARS
from gateway.deps import State
from gateway.proxy import check_realtime, signed
from gateway.upstream import Upstream, UpstreamDown, UpstreamTimeout, forward, upstream_down

REALTIME_BASIS = "realtime: the summary is made within the request itself; no pace is recorded to estimate it from"


async def estimate(state: State, body: SummaryRequest, tenant: str, mode: Mode, raw_bytes: int) -> Response:
    """200 with the :class:`Estimate`, or the problem a real submit would get."""
    if mode == Mode.realtime:
        est = await _realtime(state, body)
    else:
        report = await throughput_report(state, tenant)
        if not isinstance(report, ThroughputReport):
            return forward(report, "/v1/summaries")
        est = await _async(state, body, report, raw_bytes)
    return JSONResponse(est.model_dump(mode="json"), status_code=200)


async def _count(state: State, text: str) -> int:
    if len(text) <= INLINE_TOKENIZE_CHARS:
        return state.counter.count(text)
    return await asyncio.to_thread(state.counter.count, text)


async def _realtime(state: State, body: SummaryRequest) -> Estimate:
    check_realtime(body)
    limit = state.settings.realtime_max_input_tokens
    over = await state.counter.over_limit_async(body.text, limit)
    if over is not None:
        raise realtime_too_long_problem(over, limit)
    return Estimate(
        mode="realtime",
        input_tokens=await _count(state, body.text),
        chunks=1,
        model_calls=1,
        reduce_levels=0,
        eta_s=None,
        eta_basis=REALTIME_BASIS,
    )


async def throughput_report(state: State, tenant: str) -> ThroughputReport | Upstream:
    """async_svc's report, or its error answer (relayed as a real submit's would be)."""
    url = f"{state.settings.async_url}/internal/throughput"
    try:
        resp = await state.upstream.call(
            "GET",
            url,
            headers=await signed(state, "async_svc", "GET", url, tenant),
            timeout_s=state.settings.async_timeout_s,
        )
    except (UpstreamTimeout, UpstreamDown):
        raise upstream_down("async") from None
    if resp.status != 200:
        return resp
    return ThroughputReport.model_validate(resp.json())


def _plan(state: State, text: str) -> tuple[int, int, int, int, bool]:
    """(input tokens, chunks, model calls, reduce levels, converged): the worker's computation."""
    s = state.settings
    chunks = chunk_text(text, state.counter.tokenizer, s.chunk_tokens)
    if not chunks:  # unreachable after SummaryRequest's visible-text check; the worker fails such a job
        raise invalid_body("text: has no text to summarize")
    plan = plan_map_reduce(len(chunks), s.chunk_summary_tokens, s.chunk_tokens)
    return state.counter.count(text), len(chunks), plan.calls, plan.level, plan.converged


async def _async(state: State, body: SummaryRequest, report: ThroughputReport, raw_bytes: int) -> Estimate:
    # async_svc's own document limit (a real submit's 413 there); the text is never longer than
    # the body, so a body within the limit needs no count
    limit = report.max_document_bytes
    if raw_bytes > limit and (p := text_size_problem(body.text, limit)):
        raise p
    tokens, chunks, calls, levels, converged = await asyncio.to_thread(_plan, state, body.text)
    pace, queue = report.throughput, report.queue
    eta: float | None = None
    if not converged:
        basis = (
            "summaries at their full budget (PRECIS_CHUNK_SUMMARY_TOKENS) do not shrink within "
            "PRECIS_CHUNK_TOKENS windows: the reduce would not converge; model_calls counts the levels planned"
        )
    elif pace.model_calls_per_s is None:
        basis = f"no job succeeded in the last {pace.window_s} s: no recent pace to estimate from"
    elif queue.model_calls is None:
        basis = "the queued jobs are not planned yet and no recent job tells their size"
    else:
        rate = pace.model_calls_per_s
        eta = round((queue.model_calls + calls) / rate, 1)
        basis = (
            f"({queue.model_calls} model calls queued ahead + {calls} of this job) / {rate:.3g} calls/s, "
            f"the workers' pace while busy over the {pace.jobs} jobs that succeeded in the last {pace.window_s} s; "
            "fair sharing between tenants can finish it sooner, retries later"
        )
    return Estimate(
        mode="async",
        input_tokens=tokens,
        chunks=chunks,
        model_calls=calls,
        reduce_levels=levels,
        queue_ahead_calls=queue.model_calls,
        eta_s=eta,
        eta_basis=basis,
        throughput=pace,
    )
