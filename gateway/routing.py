"""The routing decision: realtime or async, by the request's mode or, for mode=auto, its length."""

from __future__ import annotations

from common.schemas import Mode, SummaryRequest
from gateway.deps import State
from gateway.metrics import ROUTED


async def choose_mode(state: State, body: SummaryRequest, *, dry_run: bool = False) -> Mode:
    """mode=auto: texts up to ``routing_threshold_tokens`` go realtime, longer ones async (a long
    document is not tokenized in full here: ``TokenCounter.count_upto`` stops early). A dry run
    (gateway/estimate.py) takes the same decision and is not counted as routed."""
    mode, reason = body.mode, "explicit"
    if mode == Mode.auto:
        over = await state.counter.over_limit_async(body.text, state.settings.routing_threshold_tokens)
        mode = Mode.realtime if over is None else Mode.async_
        reason = "threshold"
    if not dry_run:
        ROUTED.labels(mode.value, reason).inc()
    return mode
