"""Public API ``/v1``: auth, limits, routing by token count, proxy to realtime_svc / async_svc.

Thin wiring: the lifespan owns the clients (one pooled aiohttp session, the token counter), the
routers hold the endpoints (gateway/routers/), the dependencies the state and tenant
(gateway/deps.py); reading a request is gateway/body.py, the routing decision gateway/routing.py,
the two proxies gateway/proxy.py, the hops themselves gateway/upstream.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.appstate import set_state
from common.logs import setup_logging
from common.metrics import install_metrics
from common.problems import install_problem_handlers
from common.tokenization import TokenCounter
from gateway.config import get_settings
from gateway.deps import State
from gateway.routers import health, summaries
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
    app = FastAPI(
        title="Précis",
        version="0.1.0",
        description="Summaries of short texts at once (realtime) and of long documents as jobs (async).",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    install_metrics(app, "gateway")
    app.include_router(summaries.router)
    app.include_router(health.router)
    return app


app = create_app()
