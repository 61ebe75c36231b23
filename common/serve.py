"""Process entry helpers: run a FastAPI app (HTTP services), or the health server beside a consumer
(the app it serves is built by ``common.health.consumer_health_app``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import uvicorn

log = logging.getLogger(__name__)

__all__ = ["KEEP_ALIVE_S", "health_server", "run_http"]

# How long an idle keep-alive connection stays open on our servers. uvicorn's default (5 s) equals
# httpx's default idle expiry (the gateway's clients of async_svc/realtime_svc, most callers): a
# client reusing a connection at the moment the server drops it gets a connection closed without a
# response (httpx.ReadError; at the gateway a spurious 503). Longer than the clients' expiry, the
# client always closes first. 75 s also outlasts the usual load balancer / ingress idle timeout (60 s).
KEEP_ALIVE_S = 75


def run_http(app: str, port: int, *, graceful_s: int = 20, proxy_headers: bool = True) -> None:
    # One process per pod; scale out with replicas (HPA), not workers, so metrics stay per process.
    # proxy_headers: uvicorn rewrites the client address from X-Forwarded-For when the peer is in
    # FORWARDED_ALLOW_IPS (default 127.0.0.1); the gateway turns it off, its per-address limits
    # read a forwarded header only when configured to (PRECIS_TRUSTED_CLIENT_IP_HEADER).
    uvicorn.run(
        app,
        host="0.0.0.0",
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=graceful_s,
        timeout_keep_alive=KEEP_ALIVE_S,
        proxy_headers=proxy_headers,
        lifespan="on",
    )


class _HealthServer(uvicorn.Server):
    """uvicorn without its signal capture: the consumer owns SIGTERM and drains before exiting."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def health_server(app: Any, port: int) -> uvicorn.Server:
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
