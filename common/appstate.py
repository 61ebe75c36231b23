"""One pattern for a service's lifespan-owned state.

Each HTTP service builds its clients (HTTP session, Triton client, database, Kafka producer) in its
``lifespan``, puts them on one state object with :func:`set_state`, and its handlers receive that
object through a typed ``Annotated`` dependency made by :func:`state_getter`::

    get_state = state_getter(State)
    StateDep = Annotated[State, Depends(get_state)]

Tests drive a service in process without its lifespan: either :func:`set_state` with a state built
from test parts, or ``app.dependency_overrides[get_state] = lambda: fake``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request

from common.metrics import install_metrics
from common.problems import install_problem_handlers

T = TypeVar("T")

_ATTR = "precis"  # app.state.precis


def set_state(app: FastAPI, state: Any) -> None:
    setattr(app.state, _ATTR, state)


def state_getter(cls: type[T]) -> Callable[[Request], Awaitable[T]]:
    """The FastAPI dependency returning the app's ``cls`` state (one per service, so overridable)."""

    # async: FastAPI runs a plain-def dependency in its threadpool (a thread hop per request)
    async def get_state(request: Request) -> T:
        return getattr(request.app.state, _ATTR)

    get_state.__qualname__ = f"get_state[{cls.__name__}]"
    return get_state


def service_app(
    service: str,
    title: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    routers: list[APIRouter],
    **fastapi_kwargs: Any,
) -> FastAPI:
    """A service's FastAPI app: its lifespan and routers, plus what every service has
    (problem+json handlers, HTTP metrics and ``/metrics``)."""
    app = FastAPI(title=title, version="0.1.0", lifespan=lifespan, **fastapi_kwargs)
    install_problem_handlers(app)
    install_metrics(app, service)
    for router in routers:
        app.include_router(router)
    return app
