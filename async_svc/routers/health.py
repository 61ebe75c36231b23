"""async_svc's probes: ready when the database answers and the outbox relay publishes."""

from __future__ import annotations

from async_svc.deps import StateDep
from common.health import health_router


async def store_and_outbox_ready(state: StateDep) -> dict[str, bool]:
    return {"database": await state.db.ping(), "kafka_outbox": state.relay.healthy}


router = health_router(store_and_outbox_ready)
