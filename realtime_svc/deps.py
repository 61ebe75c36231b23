"""realtime_svc's lifespan-owned state and its dependencies (state, the gateway's signed call)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from common.appstate import state_getter
from common.internal_auth import Caller, verify_request
from common.tokenization import TokenCounter
from common.triton_client import SummarizerClient
from realtime_svc.config import RealtimeSettings
from realtime_svc.load import ServiceTime


class State:
    def __init__(self, settings: RealtimeSettings, triton: SummarizerClient, counter: TokenCounter) -> None:
        self.settings = settings
        self.triton = triton
        self.counter = counter
        self.in_flight = 0
        self.service_time = ServiceTime()  # the wait estimate behind Precis-Max-Wait-Ms
        self.internal_keys = settings.internal_token_keys()


get_state = state_getter(State)
StateDep = Annotated[State, Depends(get_state)]


async def internal_caller(request: Request, state: StateDep) -> Caller:
    """The gateway's token for this very request, verified (401 problem otherwise;
    common/internal_auth.py)."""
    return await verify_request(state.internal_keys, request, "realtime_svc")
