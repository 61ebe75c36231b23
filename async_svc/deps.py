"""async_svc's lifespan-owned state and its dependencies (state, the tenant of the gateway's
signed internal token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from async_svc.config import AsyncSettings
from async_svc.intake import GroupCommitter
from common.appstate import state_getter
from common.internal_auth import verify_request
from common.outbox import OutboxRelay
from common.schemas import IDEMPOTENCY_KEY_PATTERN
from common.store import Database


class State:
    def __init__(self, settings: AsyncSettings, db: Database, relay: OutboxRelay, committer: GroupCommitter) -> None:
        self.settings = settings
        self.db = db
        self.relay = relay
        self.committer = committer
        self.internal_keys = settings.internal_token_keys()


get_state = state_getter(State)
StateDep = Annotated[State, Depends(get_state)]


async def verified_tenant(request: Request, state: StateDep) -> str:
    """The tenant of the gateway's token for this very request (401 problem without a valid one;
    common/internal_auth.py). No header from the caller is trusted for it any more."""
    return (await verify_request(state.internal_keys, request, "async_svc")).tenant


TenantDep = Annotated[str, Depends(verified_tenant)]
# the gateway's rule (gateway/deps.py); checked again here, where the key is stored
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=IDEMPOTENCY_KEY_PATTERN)
]
