from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator

from async_svc.intake import TenantQuota
from common.schemas import MAX_TEXT_BYTES
from common.settings import HttpServerSettings, InternalAuthSettings, KafkaSettings, StoreSettings, load_settings
from common.store.retention import SweeperSettings  # PRECIS_RETENTION_*: the sweeper runs here
from common.webhook_url import WebhookGuardSettings  # the submit-time webhook check reads it


class AsyncSettings(
    HttpServerSettings, StoreSettings, KafkaSettings, WebhookGuardSettings, SweeperSettings, InternalAuthSettings
):
    """Job intake: the store (job rows + outbox) and the broker (the outbox relay)."""

    service_name: str = "async_svc"
    max_document_bytes: int = Field(default=MAX_TEXT_BYTES, ge=1, le=MAX_TEXT_BYTES)
    outbox_poll_s: float = Field(default=0.5, gt=0)
    # Most jobs written by one intake transaction (group commit, async_svc/intake.py).
    intake_max_batch: int = Field(default=256, ge=1, le=4096)
    # Per-tenant quotas, checked in the transaction that stores the job (async_svc/intake.py):
    # unfinished jobs (queued, running, cancelling), job rows stored (each holds its document
    # until retention removes it), and the UTF-8 bytes of those documents. Over one: 429.
    quota_max_active_jobs: int = Field(default=20, ge=1)
    quota_max_stored_documents: int = Field(default=1000, ge=1)
    quota_max_stored_bytes: int = Field(default=1024 * 1024 * 1024, ge=1)
    # Retry-After of a quota 429: a guess at when a slot frees (a job finishes, retention runs).
    quota_retry_after_s: int = Field(default=30, ge=1)
    # Fault injection for tests/faults only (refused outside local/test): SIGKILL this process
    # right before or right after the job's transaction commits, before anything is published.
    fault_inject: Literal["", "crash_before_commit", "crash_after_commit"] = ""

    def tenant_quota(self) -> TenantQuota:
        return TenantQuota(
            max_active_jobs=self.quota_max_active_jobs,
            max_documents=self.quota_max_stored_documents,
            max_bytes=self.quota_max_stored_bytes,
            retry_after_s=self.quota_retry_after_s,
        )

    @model_validator(mode="after")
    def _no_faults_in_production(self) -> AsyncSettings:
        if self.fault_inject and not self.is_local:
            raise ValueError("PRECIS_FAULT_INJECT is for tests only (PRECIS_ENV=local|test)")
        return self


@lru_cache
def get_settings() -> AsyncSettings:
    # start-up: a bad setting exits with its name and reason, never its value
    return load_settings(AsyncSettings)
