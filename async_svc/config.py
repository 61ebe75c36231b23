from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator

from common.schemas import MAX_TEXT_BYTES
from common.settings import HttpServerSettings, InternalAuthSettings, KafkaSettings, StoreSettings
from common.webhook_url import WebhookGuardSettings  # the submit-time webhook check reads it


class AsyncSettings(HttpServerSettings, StoreSettings, KafkaSettings, WebhookGuardSettings, InternalAuthSettings):
    """Job intake: the store (job rows + outbox) and the broker (the outbox relay)."""

    service_name: str = "async_svc"
    max_document_bytes: int = Field(default=MAX_TEXT_BYTES, ge=1, le=MAX_TEXT_BYTES)
    outbox_poll_s: float = Field(default=0.5, gt=0)
    # Most jobs written by one intake transaction (group commit, async_svc/intake.py).
    intake_max_batch: int = Field(default=256, ge=1, le=4096)
    # Fault injection for tests/faults only (refused outside local/test): SIGKILL this process
    # right before or right after the job's transaction commits, before anything is published.
    fault_inject: Literal["", "crash_before_commit", "crash_after_commit"] = ""

    @model_validator(mode="after")
    def _no_faults_in_production(self) -> AsyncSettings:
        if self.fault_inject and not self.is_local:
            raise ValueError("PRECIS_FAULT_INJECT is for tests only (PRECIS_ENV=local|test)")
        return self


@lru_cache
def get_settings() -> AsyncSettings:
    return AsyncSettings()
