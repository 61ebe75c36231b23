from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from common.schemas import MAX_TEXT_BYTES
from common.settings import CommonSettings


class AsyncSettings(CommonSettings):
    service_name: str = "async_svc"
    max_document_bytes: int = Field(default=MAX_TEXT_BYTES, ge=1, le=MAX_TEXT_BYTES)
    outbox_poll_s: float = Field(default=0.5, gt=0)


@lru_cache
def get_settings() -> AsyncSettings:
    return AsyncSettings()
