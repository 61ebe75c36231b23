"""Typed settings (pydantic-settings, env prefix ``PRECIS_``), composed per component.

Each piece below holds the fields of one shared component, with the fail-fast rules that belong
to it; every service's settings class (``<service>/config.py``) inherits only the pieces it uses,
so a service never needs a value it does not read (the gateway and realtime_svc get no database
URL, say). Env var names are the field names with the prefix: ``database_url`` is
``PRECIS_DATABASE_URL``. Settings fail fast: a bad value stops the process at start-up, and
outside ``local`` mode default secrets are refused.

==================  ==================================================================  =================
piece               fields                                                              composed by
==================  ==================================================================  =================
PrecisSettings      env (required), log_level, service_name (+ ``is_local``)            every piece
HttpServerSettings  port                                                                the five services
StoreSettings       database_url (a server database outside local mode)                 async_svc, worker,
                                                                                        notifier, migrate
KafkaSettings       kafka_bootstrap_servers, kafka_security_protocol, kafka_sasl_*,     async_svc, worker,
                    kafka_replication_factor, kafka_jobs/events_partitions              notifier, topics
TritonSettings      triton_grpc_url, triton_model                                       realtime_svc, worker
TokenizerSettings   tokenizer_path                                                      gateway,
                                                                                        realtime_svc, worker
PublicUrlSettings   public_base_url                                                     gateway, notifier
ChunkingSettings    chunk_tokens, chunk_summary_tokens (the map-reduce's windows)       worker, gateway
                                                                                        (dry-run estimate)
RealtimeLimit-      realtime_max_input_tokens (realtime_svc's 413)                      realtime_svc,
Settings                                                                                gateway (dry run)
InternalAuth-       internal_token_secret, internal_token_ttl_s (the gateway's signed   gateway,
Settings            credential for realtime_svc/async_svc, common/internal_auth.py)     realtime_svc,
                                                                                        async_svc
==================  ==================================================================  =================

:class:`CommonSettings` (store + Kafka) is for tests that need both a broker and a store; no
service or tool uses it (``python -m common.migrate`` reads :class:`StoreSettings`,
``python -m common.topics`` :class:`KafkaSettings`). The webhook guard's piece,
``WebhookGuardSettings``, lives with the guard in ``common/webhook_url.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

# cache_dir/var_dir/REPO_ROOT are defined in common.paths and re-exported here for existing imports.
from common.paths import REPO_ROOT, cache_dir, var_dir

__all__ = [
    "REPO_ROOT",
    "ChunkingSettings",
    "CommonSettings",
    "HttpServerSettings",
    "InternalAuthSettings",
    "KafkaSettings",
    "PrecisSettings",
    "PublicUrlSettings",
    "RealtimeLimitSettings",
    "StoreSettings",
    "TokenizerSettings",
    "TritonSettings",
    "cache_dir",
    "load_settings",
    "refuse_default_secret",
    "settings_error_message",
    "var_dir",
]


# --- The mode has no default (issue #14, item 6) -------------------------------------------------
# PRECIS_ENV once defaulted to "local", which turns on the dev API key, the published webhook
# secret and SQLite: a deployment that forgot the variable ran with all three. Now every process
# refuses to start until the mode is named; make run, devstack/, the tests, the images' smoke
# test and the chart set it explicitly.
ENV_HELP = (
    "set PRECIS_ENV=local (a developer machine: dev API key, dev webhook secret, SQLite allowed), "
    "PRECIS_ENV=test (automated tests; same defaults as local) or PRECIS_ENV=production "
    "(any real deployment: refuses default secrets and SQLite)"
)


class PrecisSettings(BaseSettings):
    """What every process has: its mode, its logging."""

    # hide_input_in_errors: a ValidationError would otherwise quote the input (for a model-level
    # check, the whole env dict, cut in the middle: the end of a secret showed). Errors name the
    # field and the reason only; load_settings prints them without a traceback.
    model_config = SettingsConfigDict(env_prefix="PRECIS_", extra="ignore", frozen=True, hide_input_in_errors=True)

    env: Literal["local", "test", "production"]  # required: see ENV_HELP
    log_level: str = "INFO"
    service_name: str = "precis"

    @model_validator(mode="before")
    @classmethod
    def _env_is_required(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("env"):
            raise ValueError(f"PRECIS_ENV is not set: {ENV_HELP}")
        return data

    @property
    def is_local(self) -> bool:
        return self.env in ("local", "test")


def refuse_default_secret(settings: PrecisSettings, name: str, value: SecretStr | str | None, default: str) -> None:
    """Fail fast when a secret still holds its documented default outside local mode."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not settings.is_local and raw == default:
        raise ValueError(f"{name} still has its default value; set a real secret for PRECIS_ENV={settings.env}")


S = TypeVar("S", bound=BaseSettings)


def settings_error_message(exc: ValidationError | SettingsError, title: str = "settings") -> str:
    """A start-up settings error as text an operator can act on: each failing setting's env var
    and the reason, never its value (pydantic's own text quotes the input unless
    hide_input_in_errors is set; this builds the lines from the error list to be sure)."""
    lines = [f"precis: invalid {title}; the process did not start:"]
    if isinstance(exc, ValidationError):
        for err in exc.errors(include_url=False, include_input=False, include_context=False):
            field = ".".join(str(p) for p in err["loc"])
            where = f"PRECIS_{field.upper()}: " if field else ""
            lines.append(f"  {where}{err['msg'].removeprefix('Value error, ')}")
    else:
        # pydantic-settings' parse error names the field and the source, not the value; its cause
        # (the JSON decoder's error) is dropped with it.
        lines.append(f"  {str(exc).splitlines()[0]}")
    return "\n".join(lines)


def load_settings(cls: type[S]) -> S:
    """Build a process's settings at start-up. A bad or missing setting exits the process (status
    1) with :func:`settings_error_message` on stderr: no traceback, no value."""
    try:
        return cls()  # the fields come from the environment (PRECIS_*)
    except (ValidationError, SettingsError) as exc:
        title = getattr(cls, "__name__", "settings")
        raise SystemExit(settings_error_message(exc, title)) from None


class HttpServerSettings(PrecisSettings):
    """The service's HTTP listener (API, or /healthz + /metrics); unset: the service's own default."""

    port: int | None = None


class StoreSettings(PrecisSettings):
    """The job store (SQLAlchemy URL): SQLite under var/ locally, PostgreSQL anywhere else."""

    database_url: str = Field(default_factory=lambda: f"sqlite+aiosqlite:///{var_dir() / 'precis.db'}")

    @model_validator(mode="after")
    def _store_needs_a_server_outside_local(self) -> Self:
        if not self.is_local and self.database_url.startswith("sqlite"):
            raise ValueError("PRECIS_DATABASE_URL must name a server database (PostgreSQL) outside local mode")
        return self


class KafkaSettings(PrecisSettings):
    """The broker connection, and the topic layout (python -m common.topics; Strimzi KafkaTopic
    resources use the chart's values)."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None

    kafka_replication_factor: int = Field(default=1, ge=1, le=7)
    kafka_jobs_partitions: int = Field(default=6, ge=1, le=1000)
    kafka_events_partitions: int = Field(default=6, ge=1, le=1000)


class TritonSettings(PrecisSettings):
    """The Triton server (gRPC) and the model it serves."""

    triton_grpc_url: str = "127.0.0.1:8001"
    triton_model: str = "summarizer"


class TokenizerSettings(PrecisSettings):
    """The model's tokenizer, for real token counts (unset: the pinned one under the cache,
    common.tokenization)."""

    tokenizer_path: Path | None = None


class PublicUrlSettings(PrecisSettings):
    """External base URL for status_url/Location and notification links (unset: from the request)."""

    public_base_url: str | None = None


class ChunkingSettings(PrecisSettings):
    """The map-reduce's windows (common/chunking.py): read by the worker, which runs it, and by
    the gateway, whose dry-run estimate plans the same chunks and calls (give both the same
    values; the chart and ``make run`` do)."""

    # Chunk size of the map step, and the most tokens a reduce input holds.
    chunk_tokens: int = Field(default=768, ge=64, le=8192)
    # Summary budget of each map call and intermediate reduce call.
    chunk_summary_tokens: int = Field(default=96, ge=8, le=512)


class RealtimeLimitSettings(PrecisSettings):
    """Texts above this many tokens get 413 on the realtime path (realtime_svc enforces it; the
    gateway's dry run answers the same 413 without the hop)."""

    realtime_max_input_tokens: int = Field(default=1536, ge=16, le=8192)


class CommonSettings(StoreSettings, KafkaSettings):
    """The one-off tools' settings (common.migrate: the store; common.topics: Kafka) and the
    tests' broker/store helpers. Services compose their own pieces instead."""


# The documented local-only internal token secret (docs/security.md). Refused outside local mode,
# where PRECIS_INTERNAL_TOKEN_SECRET must be set (devstack/ and `make run` set a random one).
DEV_INTERNAL_TOKEN_SECRET = "precis-local-dev-internal-token-secret-0001"
INTERNAL_SECRET_MIN_CHARS = 32


class InternalAuthSettings(PrecisSettings):
    """The credential on every gateway → realtime_svc / async_svc call (common/internal_auth.py):
    an HMAC-SHA256 key the three services share. Comma-separated for rotation: the gateway signs
    with the first, the services accept any (docs/security.md, item 7)."""

    # Values in errors are hidden: a ValidationError would otherwise print the raw env input
    # (the secret's end) beside the message (issue #14 item 9).
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    internal_token_secret: SecretStr | None = None
    # A token is good for this long after the gateway signs it (it is signed per call, right
    # before the call, so this covers the hop and clock skew between pods, not the work).
    internal_token_ttl_s: int = Field(default=30, ge=5, le=300)

    @model_validator(mode="after")
    def _internal_secret_outside_local(self) -> Self:
        keys = self._raw_internal_keys()
        if not self.is_local:
            # Messages name the variable and the rule, never a value.
            if not keys:
                raise ValueError(
                    "PRECIS_INTERNAL_TOKEN_SECRET is not set: it is required outside local mode (the same "
                    "random value, at least 32 characters, for the gateway, realtime_svc and async_svc)"
                )
            if DEV_INTERNAL_TOKEN_SECRET in keys:
                raise ValueError(
                    f"PRECIS_INTERNAL_TOKEN_SECRET still has its default value; set a real secret for "
                    f"PRECIS_ENV={self.env}"
                )
            if any(len(k) < INTERNAL_SECRET_MIN_CHARS for k in keys):
                raise ValueError(
                    f"PRECIS_INTERNAL_TOKEN_SECRET: every comma-separated key must be at least "
                    f"{INTERNAL_SECRET_MIN_CHARS} characters"
                )
        return self

    def _raw_internal_keys(self) -> list[str]:
        raw = self.internal_token_secret.get_secret_value() if self.internal_token_secret else ""
        return [k.strip() for k in raw.split(",") if k.strip()]

    def internal_token_keys(self) -> list[str]:
        """The keys, signing key first; the documented dev key when unset (local mode only: the
        validator refuses an unset secret anywhere else)."""
        return self._raw_internal_keys() or [DEV_INTERNAL_TOKEN_SECRET]
