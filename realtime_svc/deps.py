"""realtime_svc's lifespan-owned state and its dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from common.appstate import state_getter
from common.tokenization import TokenCounter
from common.triton_client import SummarizerClient
from realtime_svc.config import RealtimeSettings


class State:
    def __init__(self, settings: RealtimeSettings, triton: SummarizerClient, counter: TokenCounter) -> None:
        self.settings = settings
        self.triton = triton
        self.counter = counter
        self.in_flight = 0


get_state = state_getter(State)
StateDep = Annotated[State, Depends(get_state)]
