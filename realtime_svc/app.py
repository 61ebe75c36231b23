"""realtime_svc HTTP API (internal; the gateway calls it for short texts).

Thin wiring: the lifespan owns the Triton client and token counter (realtime_svc/deps.py holds
the state), the routers the endpoints (realtime_svc/routers/).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.appstate import service_app, set_state
from common.logs import setup_logging
from common.tokenization import TokenCounter
from common.triton_client import SummarizerClient
from realtime_svc.config import get_settings
from realtime_svc.deps import State
from realtime_svc.routers import health, summarize


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    setup_logging(settings.service_name, settings.log_level)
    counter = TokenCounter(settings.tokenizer_path)
    triton = SummarizerClient(settings.triton_grpc_url, settings.triton_model)
    set_state(app, State(settings, triton, counter))
    try:
        yield
    finally:
        await triton.close()


def create_app() -> FastAPI:
    return service_app("realtime_svc", "Précis realtime_svc", lifespan, [summarize.router, health.router])


app = create_app()
