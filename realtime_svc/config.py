from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from common.settings import (
    HttpServerSettings,
    InternalAuthSettings,
    RealtimeLimitSettings,
    TokenizerSettings,
    TritonSettings,
    load_settings,
)


class RealtimeSettings(
    HttpServerSettings, TokenizerSettings, TritonSettings, InternalAuthSettings, RealtimeLimitSettings
):
    """Short texts straight to Triton: no store, no broker."""

    service_name: str = "realtime_svc"
    realtime_deadline_s: float = Field(default=30.0, gt=0, le=300)
    realtime_max_in_flight: int = Field(default=64, ge=1)
    retry_after_s: int = Field(default=1, ge=1)


@lru_cache
def get_settings() -> RealtimeSettings:
    # start-up: a bad setting exits with its name and reason, never its value
    return load_settings(RealtimeSettings)
