"""The gateway's dependencies: its lifespan-owned state, and the tenant behind the API key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from common.appstate import state_getter
from common.problems import Problem
from common.schemas import IDEMPOTENCY_KEY_PATTERN
from common.tokenization import TokenCounter
from gateway.config import GatewaySettings, hash_key
from gateway.ratelimit import RateLimits
from gateway.spilled_keys import SpilledKeys
from gateway.upstream import UpstreamClient


class State:
    def __init__(self, settings: GatewaySettings, upstream: UpstreamClient, counter: TokenCounter) -> None:
        self.settings = settings
        self.upstream = upstream
        self.counter = counter
        self.keys = settings.key_table()
        self.limits = RateLimits(settings)
        # the Idempotency-Keys of spilled requests (gateway/routing.py), in the limits' store
        self.spilled_keys = SpilledKeys(self.limits.storage, settings.rate_limit_store_timeout_s)
        # signs every internal call (gateway/proxy.py); the first key of a rotation list
        self.internal_key = settings.internal_token_keys()[0]


get_state = state_getter(State)
StateDep = Annotated[State, Depends(get_state)]


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", "Missing or invalid API key", detail, headers={"WWW-Authenticate": "Bearer"})


async def tenant_of(request: Request, state: StateDep, authorization: Annotated[str | None, Header()] = None) -> str:
    """The tenant of the request's API key (401 without a known key), within its request rate
    (429). Failed authentications are counted per client address: past the limit every request
    from there is 429, a right key included, so keys cannot be guessed at speed."""
    limits = state.limits
    await limits.refuse_if_auth_throttled(request)
    if not authorization or not authorization.lower().startswith("bearer "):
        await limits.failed_auth_attempt(request)
        raise _unauthorized("send 'Authorization: Bearer <api key>'")
    tenant = state.keys.get(hash_key(authorization[7:].strip()))
    if tenant is None:
        await limits.failed_auth_attempt(request)
        raise _unauthorized("the API key is not recognised")
    await limits.charge(request, limits.requests, tenant)
    return tenant


TenantDep = Annotated[str, Depends(tenant_of)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Printable ASCII, 1-255 characters: a retry with the same key and body returns the same job.",
    ),
]
