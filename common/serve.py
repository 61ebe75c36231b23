"""Process entry helpers: run a FastAPI app (HTTP services) or a consumer plus its health server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from common.metrics import install_metrics

log = logging.getLogger(__name__)

# How long an idle keep-alive connection stays open on our servers. uvicorn's default (5 s) equals
# httpx's default idle expiry (the gateway's clients of async_svc/realtime_svc, most callers): a
# client reusing a connection at the moment the server drops it gets a connection closed without a
# response (httpx.ReadError; at the gateway a spurious 503). Longer than the clients' expiry, the
# client always closes first. 75 s also outlasts the usual load balancer / ingress idle timeout (60 s).
KEEP_ALIVE_S = 75


def run_http(app: str, port: int, *, graceful_s: int = 20) -> None:
    # One process per pod; scale out with replicas (HPA), not workers, so metrics stay per process.
    uvicorn.run(
        app,
        host="0.0.0.0",
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=graceful_s,
        timeout_keep_alive=KEEP_ALIVE_S,
        proxy_headers=True,
        lifespan="on",
    )


class _HealthServer(uvicorn.Server):
    """uvicorn without its signal capture: the consumer owns SIGTERM and drains before exiting."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def health_server(app, port: int) -> uvicorn.Server:
    """A uvicorn server for /healthz, /readyz, /metrics beside a consumer loop."""
    config = uvicorn.Config(
        app,
        host="0.0.0.0",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    return _HealthServer(config)


async def serve_health(server: uvicorn.Server) -> asyncio.Task:
    return asyncio.create_task(server.serve(), name="health-server")


def consumer_health_app(service: str, checks: Callable[[], Awaitable[dict[str, bool]]]) -> FastAPI:
    """/healthz (process alive), /readyz (every named check true), /metrics for a Kafka consumer."""
    app = FastAPI(title=f"Précis {service}", openapi_url=None)
    install_metrics(app, service)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        results = await checks()
        ok = all(results.values())
        return JSONResponse({"ready": ok, "checks": results}, status_code=200 if ok else 503)

    return app
