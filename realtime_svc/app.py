"""realtime_svc HTTP API (internal; the gateway calls it for short texts)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Gauge, Histogram

from common.logs import setup_logging
from common.metrics import LATENCY_BUCKETS, install_metrics
from common.problems import Problem, install_problem_handlers
from common.schemas import RealtimeRequest, RealtimeSummary, Usage
from common.tokenization import TokenCounter
from common.triton_client import SummarizerClient, TritonFailure
from realtime_svc.config import RealtimeSettings, get_settings

log = logging.getLogger(__name__)

INFER_LATENCY = Histogram("precis_realtime_infer_seconds", "Triton call latency (realtime)", buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge("precis_realtime_in_flight", "Realtime summaries in flight")
ERRORS = Counter("precis_realtime_errors_total", "Realtime failures by kind", ["kind"])


class State:
    def __init__(self, settings: RealtimeSettings, triton: SummarizerClient, counter: TokenCounter) -> None:
        self.settings = settings
        self.triton = triton
        self.counter = counter
        self.in_flight = 0


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    setup_logging(settings.service_name, settings.log_level)
    counter = TokenCounter(settings.tokenizer_path)
    triton = SummarizerClient(settings.triton_grpc_url, settings.triton_model)
    app.state.precis = State(settings, triton, counter)
    try:
        yield
    finally:
        await triton.close()


async def get_state(request: Request) -> State:
    # async: FastAPI runs a plain-def dependency in its threadpool (a thread hop per request)
    return request.app.state.precis


StateDep = Annotated[State, Depends(get_state)]


def _unavailable(settings: RealtimeSettings, kind: str, detail: str) -> Problem:
    return Problem(
        503,
        "model-overloaded" if kind == "overloaded" else "model-unavailable",
        "Summarization model overloaded" if kind == "overloaded" else "Summarization model unavailable",
        detail,
        headers={"Retry-After": str(settings.retry_after_s)},
    )


def create_app() -> FastAPI:
    app = FastAPI(title="Précis realtime_svc", version="0.1.0", lifespan=lifespan)
    install_problem_handlers(app)
    install_metrics(app, "realtime_svc")

    @app.post("/internal/summarize", response_model=RealtimeSummary)
    async def summarize(body: RealtimeRequest, state: StateDep) -> RealtimeSummary:
        s = state.settings
        t0 = time.perf_counter()
        if not body.text.strip():
            raise Problem(422, "validation-error", "Request body is not valid", "text: must not be blank")
        n = await state.counter.over_limit_async(body.text, s.realtime_max_input_tokens)
        if n is not None:
            ERRORS.labels("too_long").inc()
            raise Problem(
                413,
                "text-too-long-for-realtime",
                "Text too long for realtime",
                f"text has {n} tokens; realtime accepts at most {s.realtime_max_input_tokens} tokens. "
                "Send it with mode=async (or mode=auto) instead.",
                limit_tokens=s.realtime_max_input_tokens,
                input_tokens=n,
            )
        if state.in_flight >= s.realtime_max_in_flight:
            ERRORS.labels("shed").inc()
            raise _unavailable(
                s, "overloaded", f"more than {s.realtime_max_in_flight} summaries in flight; retry shortly"
            )
        state.in_flight += 1
        IN_FLIGHT.inc()
        t1 = time.perf_counter()
        try:
            try:
                res = await state.triton.summarize(
                    body.text,
                    body.max_summary_tokens,
                    body.language,
                    timeout_s=s.realtime_deadline_s,
                    request_id=body.request_id,
                )
            except TritonFailure as f:
                # Unavailable: a server that answered without its model (a Triton pod on its way
                # out unloads it first) or none reached (the pod then stops listening). The client
                # opened a new connection, which the Service routes to a ready pod; the call has
                # no side effects, so it is sent once more while the deadline allows. During a
                # real outage this costs one short pause before the 503.
                left = s.realtime_deadline_s - (time.perf_counter() - t1)
                if not (f.kind == "unavailable" and left > 1.0):
                    raise
                ERRORS.labels("resent").inc()
                await asyncio.sleep(0.2)
                left -= 0.2
                res = await state.triton.summarize(
                    body.text,
                    body.max_summary_tokens,
                    body.language,
                    timeout_s=left,
                    request_id=body.request_id,
                )
        except TritonFailure as f:
            ERRORS.labels(f.kind).inc()
            log.warning("triton %s: %s", f.kind, f)
            if f.kind in ("unavailable", "overloaded"):
                raise _unavailable(
                    s, f.kind, "the summarization model cannot take this request now; retry shortly"
                ) from None
            if f.kind == "deadline":
                raise Problem(
                    504,
                    "model-deadline",
                    "Summarization timed out",
                    f"no summary within the {s.realtime_deadline_s:g} s deadline",
                ) from None
            if f.kind == "invalid":
                raise Problem(422, "invalid-model-input", "Model rejected the input", str(f)) from None
            raise Problem(502, "model-error", "Summarization failed", "the model failed on this request") from None
        finally:
            state.in_flight -= 1
            IN_FLIGHT.dec()
        t2 = time.perf_counter()
        INFER_LATENCY.observe(t2 - t1)
        return RealtimeSummary(
            id=body.request_id,
            summary=res.summary,
            model=res.model,
            usage=Usage(input_tokens=res.input_tokens, output_tokens=res.output_tokens),
            timings={"tokenize_ms": round((t1 - t0) * 1000, 2), "inference_ms": round((t2 - t1) * 1000, 2)},
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(state: StateDep) -> JSONResponse:
        ok = await state.triton.ready(timeout_s=1.0)
        return JSONResponse({"ready": ok, "checks": {"triton": ok}}, status_code=200 if ok else 503)

    return app


app = create_app()
