from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from functools import lru_cache

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import HttpServerSettings, KafkaSettings, PublicUrlSettings, StoreSettings, load_settings
from common.webhook_url import WebhookGuardSettings, WebhookPolicy

# The published local-dev seed (README): local mode derives each tenant's dev signing secret from
# it, so a receiver under `make run` can verify; outside local mode it is never used, and a
# configured secret equal to the old single dev secret is refused.
DEV_WEBHOOK_SEED = b"precis-local-dev-webhook-secret"
DEFAULT_WEBHOOK_SECRET = "whsec_" + base64.b64encode(DEV_WEBHOOK_SEED).decode()
# Standard Webhooks' retry schedule: the delay before each attempt (the first is immediate).
STANDARD_WEBHOOKS_SCHEDULE_S = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
EMAIL_SCHEDULE_S = (0.0, 5.0, 30.0, 120.0, 600.0)


def dev_webhook_secret(tenant: str) -> str:
    """Local mode only: a per-tenant secret derived from the published seed (so tenants still get
    different secrets under `make run`, and a receiver can recompute its own)."""
    key = hmac.new(DEV_WEBHOOK_SEED, tenant.encode(), hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(key).decode()


class NotifierSettings(HttpServerSettings, StoreSettings, KafkaSettings, PublicUrlSettings, WebhookGuardSettings):
    """Email/webhook delivery: the store (job lookups), the broker (job events), SMTP, webhooks
    (with the SSRF policy ``PRECIS_WEBHOOK_ALLOW_HOSTS``/``_ALLOW_CIDRS``/``_ALLOWED_PORTS``)."""

    # A settings error shows no input: the failing value may be a secret (PRECIS_WEBHOOK_SECRETS).
    model_config = SettingsConfigDict(hide_input_in_errors=True)

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
    # JSON {tenant: ["whsec_current", "whsec_older", ...]} (or {tenant: "whsec_..."}): every listed
    # secret signs each delivery (Standard Webhooks multi-signature), so a tenant rotates by adding
    # the new secret first and removing the old one once its receivers verify with the new one.
    # A tenant without an entry: local mode signs with dev_webhook_secret(tenant); any other mode
    # refuses to deliver its webhooks (the notification ends `failed`, naming the setting).
    webhook_secrets: SecretStr = SecretStr("{}")
    # The whole webhook call (DNS, connect, TLS, request, response headers, capped body read).
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    # At most this much of a receiver's answer is read (only its status matters).
    webhook_max_response_bytes: int = Field(default=65536, ge=0)
    # Delay (seconds) before each attempt: attempt 1 after schedule[0], attempt n+1 schedule[n]
    # after attempt n failed; one attempt per entry. Durable: kept in the notifications table.
    webhook_retry_schedule_s: list[float] = Field(default_factory=lambda: list(STANDARD_WEBHOOKS_SCHEDULE_S))
    email_retry_schedule_s: list[float] = Field(default_factory=lambda: list(EMAIL_SCHEDULE_S))
    # Deliveries in flight at once (both channels, first attempts and retries together).
    notify_concurrency: int = Field(default=32, ge=1, le=1024)
    # How often the retry scheduler looks for due retries in the store.
    retry_poll_s: float = Field(default=1.0, gt=0)
    _secrets_by_tenant: dict[str, tuple[SecretStr, ...]] = PrivateAttr(default_factory=dict)

    @field_validator("webhook_retry_schedule_s", "email_retry_schedule_s")
    @classmethod
    def _schedule(cls, v: list[float]) -> list[float]:
        if not v or len(v) > 50 or any(d < 0 for d in v):
            raise ValueError("a retry schedule is 1 to 50 delays in seconds, each >= 0")
        return v

    @model_validator(mode="after")
    def _secrets(self) -> NotifierSettings:
        # parsed once, here: a malformed PRECIS_WEBHOOK_SECRETS stops the start
        self._secrets_by_tenant = self._secret_table()
        return self

    def _secret_table(self) -> dict[str, tuple[SecretStr, ...]]:
        # Messages name the tenant and position, never a value (pydantic prints input values of
        # failed fields; this one is a SecretStr, and the errors below are written by hand).
        try:
            raw = json.loads(self.webhook_secrets.get_secret_value())
        except json.JSONDecodeError as exc:
            raise ValueError(f"PRECIS_WEBHOOK_SECRETS is not valid JSON ({exc.msg} at position {exc.pos})") from None
        if not isinstance(raw, dict):
            raise ValueError('PRECIS_WEBHOOK_SECRETS must be a JSON object {"<tenant>": ["whsec_...", ...]}')
        table: dict[str, tuple[SecretStr, ...]] = {}
        for tenant, value in raw.items():
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
                raise ValueError(f"PRECIS_WEBHOOK_SECRETS[{tenant!r}] must be a non-empty list of whsec_ secrets")
            for i, v in enumerate(values):
                _check_secret(f"PRECIS_WEBHOOK_SECRETS[{tenant!r}][{i}]", v)
                if not self.is_local and v in (DEFAULT_WEBHOOK_SECRET, dev_webhook_secret(tenant)):
                    raise ValueError(
                        f"PRECIS_WEBHOOK_SECRETS[{tenant!r}][{i}] is a published dev secret; "
                        f"set a real secret for PRECIS_ENV={self.env}"
                    )
            table[tenant] = tuple(SecretStr(v) for v in values)
        return table

    def webhook_secrets_for(self, tenant: str) -> tuple[SecretStr, ...]:
        """The secrets that sign ``tenant``'s webhooks, newest first; empty outside local mode for
        a tenant without an entry (its webhooks are then refused)."""
        table = self._secrets_by_tenant
        if tenant in table:
            return table[tenant]
        return (SecretStr(dev_webhook_secret(tenant)),) if self.is_local else ()

    @property
    def webhook_policy(self) -> WebhookPolicy:
        return WebhookPolicy.from_settings(self)


def _check_secret(name: str, value: str) -> None:
    if not value.startswith("whsec_"):
        raise ValueError(f"{name} must look like whsec_<base64> (Standard Webhooks)")
    try:
        key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name} is not valid base64 after whsec_") from None
    if len(key) < 16:
        raise ValueError(f"{name} is {len(key)} bytes; a signing key needs at least 16")


@lru_cache
def get_settings() -> NotifierSettings:
    # start-up: a bad setting exits with its name and reason, never its value
    return load_settings(NotifierSettings)
