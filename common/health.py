"""Liveness and readiness, one shape for every service.

``GET /healthz``: the process answers (``{"status": "ok"}``, always 200).
``GET /readyz``: every named check is true (``{"ready": bool, "checks": {name: bool}}``, 200 or
503). Kubernetes routes traffic on readiness and restarts on liveness, so a dependency that is down
(Triton, the database, an upstream service) makes a pod unready, never dead.

The checks are a FastAPI dependency: an ``async def`` (plain ``def`` runs in the threadpool) that
may itself take dependencies (a service's ``StateDep``) and returns ``{name: ok}``. Tests replace it
through ``app.dependency_overrides``.
"""

# No ``from __future__ import annotations`` here: FastAPI resolves a string annotation in the
# module's globals, and ``readiness`` below is a closure variable.
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse

from common.metrics import install_metrics

Checks = Mapping[str, bool]
ReadinessDep = Callable[..., Awaitable[Checks]]


def readiness_response(checks: Checks) -> JSONResponse:
    ok = all(checks.values())
    return JSONResponse({"ready": ok, "checks": dict(checks)}, status_code=200 if ok else 503)


def health_router(readiness: ReadinessDep, *, include_in_schema: bool = False) -> APIRouter:
    """A router with ``/healthz`` and ``/readyz``; ``readiness`` is the dependency naming the checks."""
    router = APIRouter(include_in_schema=include_in_schema)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(checks: Annotated[Checks, Depends(readiness)]) -> JSONResponse:
        return readiness_response(checks)

    return router


def consumer_health_app(service: str, checks: Callable[[], Awaitable[dict[str, bool]]]) -> FastAPI:
    """/healthz (process alive), /readyz (every named check true), /metrics for a Kafka consumer
    (worker, notifier), served by ``common.serve.health_server`` beside the consumer loop."""
    app = FastAPI(title=f"Précis {service}", openapi_url=None)
    install_metrics(app, service)

    app.include_router(health_router(checks, include_in_schema=True))
    return app
