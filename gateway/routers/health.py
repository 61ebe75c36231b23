"""The gateway's probes: ready when both upstream services are."""

from __future__ import annotations

import asyncio

from common.health import health_router
from gateway.deps import State, StateDep
from gateway.upstream import UpstreamDown, UpstreamTimeout


async def _ready(state: State, url: str) -> bool:
    try:
        return (await state.upstream.call("GET", f"{url}/readyz", timeout_s=2.0)).status == 200
    except (UpstreamTimeout, UpstreamDown):
        return False


async def upstreams_ready(state: StateDep) -> dict[str, bool]:
    rt, asy = await asyncio.gather(_ready(state, state.settings.realtime_url), _ready(state, state.settings.async_url))
    return {"realtime_svc": rt, "async_svc": asy}


router = health_router(upstreams_ready)
