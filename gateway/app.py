"""Public API ``/v1``: auth, limits, routing by token count, proxy to realtime_svc / async_svc.

Thin wiring: the lifespan owns the clients (one pooled aiohttp session, the token counter), the
routers hold the endpoints (gateway/routers/), the dependencies the state and tenant
(gateway/deps.py); reading a request is gateway/body.py, the routing decision gateway/routing.py,
the two proxies gateway/proxy.py, the hops themselves gateway/upstream.py. The OpenAPI document
is built by gateway/openapi.py (problem responses, security, examples), the problem types'
documentation served by gateway/routers/problems.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.appstate import service_app, set_state
from common.logs import setup_logging
from common.tokenization import TokenCounter
from gateway.config import get_settings
from gateway.deps import State
from gateway.openapi import install_openapi, operation_id
from gateway.ratelimit import RateLimitHeaders
from gateway.routers import health, problems, summaries
from gateway.upstream import AiohttpUpstream, open_session


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    setup_logging(settings.service_name, settings.log_level)
    counter = TokenCounter(settings.tokenizer_path)
    upstream = AiohttpUpstream(open_session(settings))
    try:
        set_state(app, State(settings, upstream, counter))
        yield
    finally:
        await upstream.close()


def create_app() -> FastAPI:
    app = service_app(
        "gateway",
        "Précis",
        lifespan,
        [summaries.router, problems.router, health.router],
        description="Summaries of short texts at once (realtime) and of long documents as jobs (async).",
        generate_unique_id_function=operation_id,
    )
    install_openapi(app)
    app.add_middleware(RateLimitHeaders)  # RateLimit-* on every charged response (gateway/ratelimit.py)
    return app


app = create_app()
