"""``POST /internal/summarize``: one summary from Triton, at once, within the deadline; with
``stream: true`` as Server-Sent Events while it is generated."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Header
from sse_starlette import EventSourceResponse

from common.problems import Problem, invalid_body
from common.schemas import (
    MAX_WAIT_HEADER,
    REFUSED_BEFORE_START_HEADER,
    RealtimeRequest,
    RealtimeSummary,
    SpillReason,
    Usage,
    realtime_too_long_problem,
)
from common.streaming import SSE_HEADERS, ClosingMixin
from common.triton_client import TritonFailure, TritonResult
from realtime_svc.config import RealtimeSettings
from realtime_svc.deps import State, StateDep, internal_caller
from realtime_svc.metrics import ERRORS, IN_FLIGHT, INFER_LATENCY, REFUSED, SERVICE_TIME

log = logging.getLogger(__name__)
T = TypeVar("T")

# Every route here needs the gateway's signed token (401 before the body is looked at); the
# probes (routers/health.py) and /metrics stay open.
router = APIRouter(dependencies=[Depends(internal_caller)])


def _unavailable(settings: RealtimeSettings, kind: str, detail: str, refused: SpillReason | None = None) -> Problem:
    """503. ``refused``: the request was refused before any generation started (the gateway may
    run it as an async job instead: common/schemas.py REFUSED_BEFORE_START_HEADER)."""
    headers = {"Retry-After": str(settings.retry_after_s)}
    if refused is not None:
        headers[REFUSED_BEFORE_START_HEADER] = refused.value
        REFUSED.labels(refused.value).inc()
    return Problem(
        503,
        "model-overloaded" if kind == "overloaded" else "model-unavailable",
        "Summarization model overloaded" if kind == "overloaded" else "Summarization model unavailable",
        detail,
        headers=headers,
    )


def _max_wait_s(raw: str | None) -> float | None:
    """The gateway's bound (``Precis-Max-Wait-Ms``), or None: absent or not a number ≥ 0 means
    no bound (the request queues as any other; the in-flight cap still holds)."""
    if raw is None:
        return None
    try:
        ms = float(raw)
    except ValueError:
        return None
    return ms / 1000 if math.isfinite(ms) and ms >= 0 else None


async def _check_input(state: State, body: RealtimeRequest) -> None:
    """422 for a blank text, 413 (naming both counts) over the realtime token limit."""
    s = state.settings
    if not body.text.strip():
        raise invalid_body("text: must not be blank")
    n = await state.counter.over_limit_async(body.text, s.realtime_max_input_tokens)
    if n is not None:
        ERRORS.labels("too_long").inc()
        raise realtime_too_long_problem(n, s.realtime_max_input_tokens)


def _failure_problem(s: RealtimeSettings, f: TritonFailure) -> Problem:
    """The answer for a Triton call that failed (after the one resend, if any)."""
    if f.kind == "overloaded":
        # Triton refused it unstarted: its queue is full, or the request timed out in that queue
        # (Triton's queue policy times out queued requests only, never one being executed)
        return _unavailable(
            s,
            f.kind,
            "the summarization model cannot take this request now; retry shortly",
            refused=SpillReason.model_queue_full,
        )
    if f.kind == "unavailable":
        return _unavailable(s, f.kind, "the summarization model cannot take this request now; retry shortly")
    if f.kind == "deadline":
        return Problem(
            504,
            "model-deadline",
            "Summarization timed out",
            f"no summary within the {s.realtime_deadline_s:g} s deadline",
        )
    if f.kind == "invalid":
        return Problem(422, "invalid-model-input", "Model rejected the input", str(f))
    return Problem(502, "model-error", "Summarization failed", "the model failed on this request")


def _admit(state: State, max_wait_s: float | None) -> None:
    """Refuse (503, before any Triton call) at the in-flight cap, or, when the gateway sent a
    bound, when the summaries already in flight would keep this one waiting longer than it."""
    s = state.settings
    if state.in_flight >= s.realtime_max_in_flight:
        ERRORS.labels("shed").inc()
        raise _unavailable(
            s,
            "overloaded",
            f"more than {s.realtime_max_in_flight} summaries in flight; retry shortly",
            refused=SpillReason.realtime_at_capacity,
        )
    if max_wait_s is not None and state.service_time.estimated_wait_s(state.in_flight) > max_wait_s:
        ERRORS.labels("wait_bound").inc()
        # no figures: only a mode=auto request carries a bound, and the gateway turns this
        # answer into an async job; should it ever be relayed, it names nothing internal
        raise _unavailable(
            s,
            "overloaded",
            "the realtime queue is too long now; retry shortly",
            refused=SpillReason.realtime_wait_too_long,
        )


class _Slot:
    """One admitted summary's place among those in flight (the in-flight cap, the wait estimate):
    taken at admission, given back once, when its answer is complete (a streamed one: when the
    stream ends, however it ends)."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._held = True
        state.service_time.started(state.in_flight)
        state.in_flight += 1
        IN_FLIGHT.inc()

    def release(self, completed: bool) -> None:
        if not self._held:
            return
        self._held = False
        st = self._state
        st.in_flight -= 1
        IN_FLIGHT.dec()
        st.service_time.finished(completed=completed)
        if st.service_time.per_summary_s is not None:
            SERVICE_TIME.set(st.service_time.per_summary_s)


async def _resending(s: RealtimeSettings, t1: float, call: Callable[[float], Awaitable[T]]) -> T:
    """``call(timeout_s)`` within the deadline, sent once more if it found no model.

    Unavailable: a server that answered without its model (a Triton pod on its way out unloads it
    first) or none reached (the pod then stops listening). The client opened a new connection,
    which the Service routes to a ready pod; the call has no side effects, so it is sent once more
    while the deadline allows. During a real outage this costs one short pause before the 503."""
    try:
        return await call(s.realtime_deadline_s)
    except TritonFailure as f:
        left = s.realtime_deadline_s - (time.perf_counter() - t1)
        if not (f.kind == "unavailable" and left > 1.0):
            raise
    ERRORS.labels("resent").inc()
    await asyncio.sleep(0.2)
    return await call(left - 0.2)


def _failed(s: RealtimeSettings, f: TritonFailure) -> Problem:
    ERRORS.labels(f.kind).inc()
    log.warning("triton %s: %s", f.kind, f)
    return _failure_problem(s, f)


def _summary(body: RealtimeRequest, res: TritonResult, timings: dict[str, float]) -> RealtimeSummary:
    return RealtimeSummary(
        id=body.request_id,
        summary=res.summary,
        model=res.model,
        usage=Usage(input_tokens=res.input_tokens, output_tokens=res.output_tokens),
        timings={k: round(v * 1000, 2) for k, v in timings.items()},
    )


@router.post("/internal/summarize", response_model=RealtimeSummary)
async def summarize(
    body: RealtimeRequest,
    state: StateDep,
    max_wait_ms: Annotated[str | None, Header(alias=MAX_WAIT_HEADER, include_in_schema=False)] = None,
) -> RealtimeSummary | EventSourceResponse:
    s = state.settings
    t0 = time.perf_counter()
    await _check_input(state, body)
    _admit(state, _max_wait_s(max_wait_ms))
    slot = _Slot(state)
    t1 = time.perf_counter()
    if body.stream:
        return await _stream(state, body, slot, t0, t1)
    completed = False
    try:
        res = await _resending(
            s,
            t1,
            lambda timeout_s: state.triton.summarize(
                body.text, body.max_summary_tokens, body.language, timeout_s=timeout_s, request_id=body.request_id
            ),
        )
        completed = True
    except TritonFailure as f:
        raise _failed(s, f) from None
    finally:
        slot.release(completed)
    t2 = time.perf_counter()
    INFER_LATENCY.observe(t2 - t1)
    return _summary(body, res, {"tokenize_ms": t1 - t0, "inference_ms": t2 - t1})


async def _stream(state: State, body: RealtimeRequest, slot: _Slot, t0: float, t1: float) -> EventSourceResponse:
    """Server-Sent Events: a ``token`` event per text delta as it is generated, then one
    ``summary`` event (the RealtimeSummary; ``timings.ttft_ms``: to the first token). The call is
    opened and its first delta awaited before answering, so a failure before the first token is
    an ordinary problem+json answer (503, 504, 422...); one after it ends the stream with an
    ``error`` event carrying the problem. A client that goes away closes the iteration, which
    cancels the Triton request (its row is freed at the model's next cancellation poll)."""
    s = state.settings

    async def first(timeout_s: float) -> tuple[AsyncGenerator[str | TritonResult], str | TritonResult]:
        it = state.triton.summarize_stream(
            body.text, body.max_summary_tokens, body.language, timeout_s=timeout_s, request_id=body.request_id
        )
        try:
            return it, await anext(it)
        except BaseException:
            await it.aclose()
            raise

    try:
        it, item = await _resending(s, t1, first)
    except TritonFailure as f:
        slot.release(False)
        raise _failed(s, f) from None
    except BaseException:
        slot.release(False)
        raise
    t_first = time.perf_counter()

    async def events() -> AsyncGenerator[dict[str, str]]:
        completed = False
        current: str | TritonResult = item
        try:
            while isinstance(current, str):
                yield {"event": "token", "data": json.dumps({"text": current}, ensure_ascii=False)}
                current = await anext(it)
            t2 = time.perf_counter()
            INFER_LATENCY.observe(t2 - t1)
            completed = True
            timings = {"tokenize_ms": t1 - t0, "ttft_ms": t_first - t1, "inference_ms": t2 - t1}
            yield {"event": "summary", "data": _summary(body, current, timings).model_dump_json()}
        except TritonFailure as f:
            yield {"event": "error", "data": json.dumps(_failed(s, f).body(), ensure_ascii=False)}
        finally:
            await it.aclose()
            slot.release(completed)

    body_iter = events()

    async def close() -> None:
        # also when the body was never iterated (common/streaming.py ClosingMixin says why)
        await body_iter.aclose()
        await it.aclose()
        slot.release(False)  # no-op when events() released it

    response = _Events(body_iter, headers=SSE_HEADERS)
    response.on_close = close
    return response


class _Events(ClosingMixin, EventSourceResponse):
    """sse-starlette's response (event framing, keep-alive pings, the client's disconnect), with
    an ``on_close``."""
