"""Prometheus metrics shared across services, and an ASGI middleware for HTTP latency.

Only metrics more than one service records live here (HTTP latency, the outbox relay of async_svc
and worker); a service's own metrics sit in its package (gateway/metrics.py,
realtime_svc/metrics.py, async_svc/metrics.py, worker/runner.py and worker/main.py, notifier/service.py)."""

from __future__ import annotations

import time

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)

HTTP_LATENCY = Histogram(
    "precis_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge("precis_http_in_flight_requests", "HTTP requests being served", ["service"])
OUTBOX_PUBLISHED = Counter("precis_outbox_published_total", "Outbox messages published to Kafka")
OUTBOX_LAG = Gauge("precis_outbox_lag_seconds", "Age of the oldest outbox row in the last published batch")
OUTBOX_POISONED = Counter(
    "precis_outbox_poisoned_total", "Outbox rows set aside: they failed to publish for a reason of their own", ["topic"]
)


class _HTTPMetrics:
    """Pure ASGI middleware: Starlette's ``@app.middleware("http")`` (BaseHTTPMiddleware) wraps
    every request in a task group and memory streams, which showed up in py-spy profiles of the
    gateway hop; this one only wraps ``send`` to catch the status code."""

    def __init__(self, app, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        in_flight = HTTP_IN_FLIGHT.labels(self.service)
        in_flight.inc()

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            in_flight.dec()
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            HTTP_LATENCY.labels(self.service, path, scope["method"], str(status)).observe(time.perf_counter() - start)


def install_metrics(app: FastAPI, service: str) -> None:
    app.add_middleware(_HTTPMetrics, service=service)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
