"""Prometheus metrics shared across services, and an ASGI middleware for HTTP latency."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)

HTTP_LATENCY = Histogram(
    "precis_http_request_duration_seconds", "HTTP request latency", ["service", "route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge("precis_http_in_flight_requests", "HTTP requests being served", ["service"])
OUTBOX_PUBLISHED = Counter("precis_outbox_published_total", "Outbox messages published to Kafka")
OUTBOX_LAG = Gauge("precis_outbox_lag_seconds", "Age of the oldest outbox row in the last published batch")


def install_metrics(app: FastAPI, service: str) -> None:
    @app.middleware("http")
    async def _observe(request: Request, call_next):  # noqa: ANN202
        start = time.perf_counter()
        HTTP_IN_FLIGHT.labels(service).inc()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            HTTP_IN_FLIGHT.labels(service).dec()
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            HTTP_LATENCY.labels(service, path, request.method, str(status)).observe(time.perf_counter() - start)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
