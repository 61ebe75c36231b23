from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from common.schemas import MAX_TEXT_BYTES
from common.serve import KEEP_ALIVE_S
from common.settings import (
    ChunkingSettings,
    HttpServerSettings,
    InternalAuthSettings,
    PrecisSettings,
    PublicUrlSettings,
    RealtimeLimitSettings,
    TokenizerSettings,
    load_settings,
    refuse_default_secret,
)
from common.webhook_url import WebhookGuardSettings  # the submit-time webhook check reads it

# The documented local-only API key (README). Refused whenever PRECIS_ENV is not "local".
DEFAULT_DEV_API_KEY = "precis-dev-key"


class SpilloverSettings(PrecisSettings):
    """Overload spill-over (gateway/routing.py): a ``mode=auto`` text short enough for realtime
    that realtime cannot take at once (its in-flight cap, the model's full queue, or an estimated
    wait over ``spillover_max_wait_s``) becomes an async job (202) instead of a 503. realtime_svc
    refuses such a request before any generation starts, so it never costs model time twice.
    ``mode=realtime`` is never spilled (503 + Retry-After, as before)."""

    spillover_enabled: bool = True
    # The longest a mode=auto request may wait in realtime_svc's queue (its estimate: summaries in
    # flight x recent busy time per summary, realtime_svc/load.py) before it goes async instead.
    spillover_max_wait_s: float = Field(default=5.0, gt=0, le=300)


class GatewaySettings(
    SpilloverSettings,
    HttpServerSettings,
    TokenizerSettings,
    PublicUrlSettings,
    WebhookGuardSettings,
    InternalAuthSettings,
    ChunkingSettings,
    RealtimeLimitSettings,
):
    """The internet-facing gateway: no store, no broker, no Triton (it calls realtime_svc/async_svc).
    The chunking and realtime-limit pieces are the dry run's (POST /v1/summaries?dry_run=true)."""

    service_name: str = "gateway"
    # JSON object {sha256(api key) hex: tenant}. Keys are configured hashed, never in clear.
    api_keys: SecretStr = SecretStr("{}")
    # Local mode only: this key maps to tenant "dev" (unset: the documented DEFAULT_DEV_API_KEY;
    # empty: no dev key). Outside local mode it must stay unset. (It defaulted to the documented
    # key in every mode once, so a production gateway refused to start from env alone: the chart
    # renders no PRECIS_DEV_API_KEY, tests/chart/test_rendered_settings.py.)
    dev_api_key: SecretStr | None = None
    realtime_url: str = "http://127.0.0.1:8081"
    async_url: str = "http://127.0.0.1:8082"
    # mode=auto: texts up to this many tokens go realtime, longer ones async.
    routing_threshold_tokens: int = Field(default=512, ge=1, le=8192)
    # Whole request body limit: the 10 MB text limit plus JSON escaping headroom.
    max_request_bytes: int = Field(default=2 * MAX_TEXT_BYTES + 65536, ge=1024)
    # Rate limits (gateway/ratelimit.py), one-minute sliding windows. The store: redis://[:pw@]
    # host:port[/db] or rediss:// is shared by every replica (the limits are global); memory://
    # counts in this process only, so each replica has the full limit (fine for `make run`'s one
    # gateway). A SecretStr: a Redis URI may carry a password.
    rate_limit_storage_uri: SecretStr = SecretStr("memory://")
    rate_limit_per_minute: int = Field(default=600, ge=1)  # requests per tenant
    # request-body bytes per tenant: a 10 MB body costs 10 MB; at least max_request_bytes
    rate_limit_bytes_per_minute: int = Field(default=100_000_000, ge=1024)
    rate_limit_failed_auth_per_minute: int = Field(default=20, ge=1)  # per client address
    # Shared store unreachable: "open" counts in this replica's memory meanwhile, "closed" answers 503.
    rate_limit_store_failure: Literal["open", "closed"] = "open"
    rate_limit_store_timeout_s: float = Field(default=0.5, gt=0, le=10)
    # The client address for the failed-auth limit is the TCP peer's: behind a proxy, the proxy's.
    # Set this to a header the proxy writes (its rightmost entry is used, e.g. X-Forwarded-For
    # behind exactly one proxy that appends) only when every request passes through that proxy;
    # a client reaching the gateway directly could write the header itself.
    trusted_client_ip_header: str | None = None
    realtime_timeout_s: float = Field(default=35.0, gt=0)
    async_timeout_s: float = Field(default=30.0, gt=0)
    # Idle keep-alive connections to realtime_svc/async_svc are dropped after this long. It must
    # stay below the upstreams' own keep-alive timeout (common.serve.KEEP_ALIVE_S), or the gateway
    # could send a request on a connection the upstream is closing at that moment and get no
    # response (a spurious 503).
    upstream_keepalive_s: float = Field(default=30.0, gt=0, lt=KEEP_ALIVE_S)
    upstream_max_connections: int = Field(default=200, ge=1)

    @model_validator(mode="after")
    def _check_keys(self) -> GatewaySettings:
        refuse_default_secret(self, "PRECIS_DEV_API_KEY", self.dev_api_key, DEFAULT_DEV_API_KEY)
        if not self.is_local and self.dev_api_key is not None and self.dev_api_key.get_secret_value():
            raise ValueError("PRECIS_DEV_API_KEY is for local mode only; configure PRECIS_API_KEYS (hashed)")
        try:
            keys = json.loads(self.api_keys.get_secret_value())
        except json.JSONDecodeError as exc:
            raise ValueError(f"PRECIS_API_KEYS is not valid JSON: {exc.msg}") from None
        if not isinstance(keys, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items()):
            raise ValueError('PRECIS_API_KEYS must be a JSON object {"<sha256 hex of key>": "<tenant>"}')
        if not self.is_local and not keys:
            raise ValueError("PRECIS_API_KEYS is empty: no client could authenticate")
        return self

    @model_validator(mode="after")
    def _check_rate_limits(self) -> GatewaySettings:
        scheme = self.rate_limit_storage_uri.get_secret_value().removeprefix("async+").split("://", 1)[0]
        if scheme not in ("memory", "redis", "rediss", "redis+unix"):
            # the scheme only: the URI may hold a password
            raise ValueError(f"PRECIS_RATE_LIMIT_STORAGE_URI: scheme {scheme!r} is not memory, redis or rediss")
        if self.rate_limit_bytes_per_minute < self.max_request_bytes:
            raise ValueError(
                f"PRECIS_RATE_LIMIT_BYTES_PER_MINUTE ({self.rate_limit_bytes_per_minute}) is below "
                f"PRECIS_MAX_REQUEST_BYTES ({self.max_request_bytes}): a body of the allowed size could never pass"
            )
        return self

    def key_table(self) -> dict[str, str]:
        table = {k.lower(): v for k, v in json.loads(self.api_keys.get_secret_value()).items()}
        dev = DEFAULT_DEV_API_KEY if self.dev_api_key is None else self.dev_api_key.get_secret_value()
        if self.is_local and dev:
            table[hash_key(dev)] = "dev"
        return table


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@lru_cache
def get_settings() -> GatewaySettings:
    # start-up: a bad setting exits with its name and reason, never its value
    return load_settings(GatewaySettings)
