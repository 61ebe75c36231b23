"""The gateway's probes: ready when both upstream services are (and, with
PRECIS_RATE_LIMIT_STORE_FAILURE=closed, the rate-limit store: without it every request would be
503). /readyz also says where the rate limits are counted and whether the store answers."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from gateway.deps import State, StateDep
from gateway.upstream import UpstreamDown, UpstreamTimeout

router = APIRouter(include_in_schema=False)


async def _ready(state: State, url: str) -> bool:
    try:
        return (await state.upstream.call("GET", f"{url}/readyz", timeout_s=2.0)).status == 200
    except (UpstreamTimeout, UpstreamDown):
        return False


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> JSONResponse:
    """common.health's shape ({"ready", "checks"}) plus "rate_limits": the store's kind, whether
    it answers, and what happens when it does not (fail "open": counted per replica meanwhile, the
    pod stays ready; "closed": the store is a readiness check)."""
    limits = state.limits
    rt, asy, store = await asyncio.gather(
        _ready(state, state.settings.realtime_url), _ready(state, state.settings.async_url), limits.store_reachable()
    )
    checks = {"realtime_svc": rt, "async_svc": asy}
    if limits.on_failure == "closed":
        checks["rate_limit_store"] = store
    ok = all(checks.values())
    info: dict[str, Any] = {
        "storage": limits.kind,
        "scope": "per-replica" if limits.kind == "memory" or not store else "global",
        "store_reachable": store,
        "on_store_failure": limits.on_failure,
    }
    return JSONResponse({"ready": ok, "checks": checks, "rate_limits": info}, status_code=200 if ok else 503)
