"""The routing decision: realtime or async, by the request's mode or, for mode=auto, its length;
and, for mode=auto, the overload spill-over to async (gateway/routers/summaries.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from common.problems import invalid_body
from common.schemas import Mode, SpillReason, SummaryRequest
from gateway.deps import State
from gateway.metrics import ROUTED, SPILLOVER

JobRouteReason = Literal["explicit", "threshold", "spilled_over"]  # AsyncAccepted.route_reason
RouteReason = JobRouteReason | Literal["stream"]  # "stream": mode=auto, streamed (realtime only)


@dataclass(frozen=True)
class Route:
    mode: Mode  # realtime or async, never auto
    reason: RouteReason

    @property
    def may_spill(self) -> bool:
        """A mode=auto text sent to realtime by its length: realtime may refuse it unstarted, and
        then it becomes an async job (``spill``). mode=realtime is never spilled: 503 as before."""
        return self.mode == Mode.realtime and self.reason == "threshold"


async def choose_mode(state: State, body: SummaryRequest) -> Route:
    """mode=auto: texts up to ``routing_threshold_tokens`` go realtime, longer ones async (a long
    document is not tokenized in full here: ``TokenCounter.count_upto`` stops early). The dry run
    (gateway/estimate.py) takes the same decision; a submit counts its final path (``counted``)."""
    if body.stream:
        # a stream is realtime only: mode=async is refused, mode=auto is realtime at any length
        # (realtime_svc answers 413 over its limit), and never spilled (a stream is not a job)
        if body.mode == Mode.async_:
            raise invalid_body(
                "stream: only realtime summaries stream; mode=async answers 202 with a job to poll "
                "(send stream=false, or mode=auto/realtime)"
            )
        return Route(Mode.realtime, "explicit" if body.mode == Mode.realtime else "stream")
    if body.mode != Mode.auto:
        return Route(body.mode, "explicit")
    over = await state.counter.over_limit_async(body.text, state.settings.routing_threshold_tokens)
    return Route(Mode.realtime if over is None else Mode.async_, "threshold")


def counted(route: Route) -> Route:
    """Count a submit by the path it takes (``precis_gateway_routed_total{mode, reason}``)."""
    ROUTED.labels(route.mode.value, route.reason).inc()
    return route


def spill(reason: SpillReason) -> Route:
    """The route of a mode=auto request realtime refused before starting it: async, counted in
    both ``precis_gateway_spillover_total{reason}`` and ``precis_gateway_routed_total``."""
    SPILLOVER.labels(reason.value).inc()
    return counted(Route(Mode.async_, "spilled_over"))
