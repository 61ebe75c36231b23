"""common.health in process: the consumers' health app (worker, notifier) and the shared router."""

from __future__ import annotations

import httpx

from common.health import consumer_health_app


async def test_consumer_health_app() -> None:
    state = {"consumer": True, "database": True}

    async def checks() -> dict[str, bool]:
        return dict(state)

    app = consumer_health_app("worker", checks)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as c:
        r = await c.get("/healthz")
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
        r = await c.get("/readyz")
        assert (r.status_code, r.json()) == (200, {"ready": True, "checks": state})
        state["consumer"] = False
        r = await c.get("/readyz")
        assert (r.status_code, r.json()) == (503, {"ready": False, "checks": {"consumer": False, "database": True}})
        r = await c.get("/metrics")
        assert r.status_code == 200 and "precis_http_request_duration_seconds" in r.text
        assert (await c.get("/openapi.json")).status_code == 404
