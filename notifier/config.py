from __future__ import annotations

import base64
from functools import lru_cache

from pydantic import Field, SecretStr, model_validator

from common.settings import (
    HttpServerSettings,
    KafkaSettings,
    PublicUrlSettings,
    StoreSettings,
    load_settings,
    refuse_default_secret,
)
from common.webhook_url import WebhookGuardSettings, WebhookPolicy

DEFAULT_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"precis-local-dev-webhook-secret").decode()


class NotifierSettings(HttpServerSettings, StoreSettings, KafkaSettings, PublicUrlSettings, WebhookGuardSettings):
    """Email/webhook delivery: the store (job lookups), the broker (job events), SMTP, webhooks
    (with the SSRF policy ``PRECIS_WEBHOOK_ALLOW_HOSTS``/``_ALLOW_CIDRS``/``_ALLOWED_PORTS``)."""

    service_name: str = "notifier"
    group_id: str = "precis-notifier"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: SecretStr | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_tls: bool = False
    smtp_from: str = "Précis <precis@localhost>"
    smtp_timeout_s: float = Field(default=15.0, gt=0)
    webhook_secret: SecretStr = SecretStr(DEFAULT_WEBHOOK_SECRET)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    send_attempts: int = Field(default=4, ge=1, le=20)

    @model_validator(mode="after")
    def _secrets(self) -> NotifierSettings:
        refuse_default_secret(self, "PRECIS_WEBHOOK_SECRET", self.webhook_secret, DEFAULT_WEBHOOK_SECRET)
        if not self.webhook_secret.get_secret_value().startswith("whsec_"):
            raise ValueError("PRECIS_WEBHOOK_SECRET must look like whsec_<base64> (Standard Webhooks)")
        return self

    @property
    def webhook_policy(self) -> WebhookPolicy:
        return WebhookPolicy.from_settings(self)


@lru_cache
def get_settings() -> NotifierSettings:
    # start-up: a bad setting exits with its name and reason, never its value
    return load_settings(NotifierSettings)
