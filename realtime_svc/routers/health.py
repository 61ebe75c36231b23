"""realtime_svc's probes: ready when Triton serves the model."""

from __future__ import annotations

from common.health import health_router
from realtime_svc.deps import StateDep


async def triton_ready(state: StateDep) -> dict[str, bool]:
    return {"triton": await state.triton.ready(timeout_s=1.0)}


router = health_router(triton_ready)
