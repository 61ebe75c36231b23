"""async_svc's lifespan-owned state and its dependencies (state, the gateway-set tenant header)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from async_svc.config import AsyncSettings
from async_svc.intake import GroupCommitter
from common.appstate import state_getter
from common.outbox import OutboxRelay
from common.store import Database


class State:
    def __init__(self, settings: AsyncSettings, db: Database, relay: OutboxRelay, committer: GroupCommitter) -> None:
        self.settings = settings
        self.db = db
        self.relay = relay
        self.committer = committer


get_state = state_getter(State)
StateDep = Annotated[State, Depends(get_state)]
# Set by the gateway from the caller's API key; async_svc is internal and trusts it.
TenantDep = Annotated[str, Header(alias="X-Precis-Tenant", min_length=1, max_length=128)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
