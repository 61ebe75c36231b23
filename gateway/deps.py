"""The gateway's dependencies: its lifespan-owned state, and the tenant behind the API key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from common.appstate import state_getter
from common.problems import Problem
from common.tokenization import TokenCounter
from gateway.config import GatewaySettings, hash_key
from gateway.ratelimit import TokenBucketLimiter
from gateway.upstream import UpstreamClient


class State:
    def __init__(self, settings: GatewaySettings, upstream: UpstreamClient, counter: TokenCounter) -> None:
        self.settings = settings
        self.upstream = upstream
        self.counter = counter
        self.keys = settings.key_table()
        self.limiter = TokenBucketLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
        # signs every internal call (gateway/proxy.py); the first key of a rotation list
        self.internal_key = settings.internal_token_keys()[0]


get_state = state_getter(State)
StateDep = Annotated[State, Depends(get_state)]


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", "Missing or invalid API key", detail, headers={"WWW-Authenticate": "Bearer"})


async def tenant_of(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> str:
    """The tenant of the request's API key (401 without a known key), within its rate limit (429)."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise _unauthorized("send 'Authorization: Bearer <api key>'")
    tenant = state.keys.get(hash_key(authorization[7:].strip()))
    if tenant is None:
        raise _unauthorized("the API key is not recognised")
    wait = state.limiter.take(tenant)
    if wait > 0:
        raise Problem(
            429,
            "rate-limited",
            "Too many requests",
            f"tenant rate limit is {state.settings.rate_limit_per_minute} requests/minute "
            f"(burst {state.settings.rate_limit_burst})",
            headers={"Retry-After": str(max(1, int(wait + 0.999)))},
            limit_per_minute=state.settings.rate_limit_per_minute,
        )
    return tenant


TenantDep = Annotated[str, Depends(tenant_of)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
