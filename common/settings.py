"""Typed settings (pydantic-settings, env prefix ``PRECIS_``).

Every service subclasses :class:`CommonSettings` with its own fields. Settings fail fast: a bad
value stops the process at start-up, and outside ``local`` mode default secrets are refused.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent

# The documented local-only API key (README). Refused whenever PRECIS_ENV is not "local".
DEFAULT_DEV_API_KEY = "precis-dev-key"


def cache_dir() -> Path:
    """Where big downloads live, outside the clone, so every clone and CI run reuses them."""
    return Path(os.environ.get("PRECIS_CACHE", Path.home() / ".cache" / "precis"))


def var_dir() -> Path:
    """Local state (SQLite file, Kafka data, mail sink) lives under ``var/`` unless overridden."""
    return Path(os.environ.get("PRECIS_VAR_DIR", REPO_ROOT / "var"))


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRECIS_", extra="ignore", frozen=True)

    env: Literal["local", "test", "production"] = "local"
    log_level: str = "INFO"
    service_name: str = "precis"
    port: int | None = None

    database_url: str = Field(default_factory=lambda: f"sqlite+aiosqlite:///{var_dir() / 'precis.db'}")
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None

    # Topic layout (python -m common.topics); Strimzi KafkaTopic resources use the chart's values.
    kafka_replication_factor: int = Field(default=1, ge=1, le=7)
    kafka_jobs_partitions: int = Field(default=6, ge=1, le=1000)
    kafka_events_partitions: int = Field(default=6, ge=1, le=1000)

    triton_grpc_url: str = "127.0.0.1:8001"
    triton_model: str = "summarizer"
    tokenizer_path: Path | None = None

    # Chunking shared by the gateway (routing estimate) and the worker (map-reduce).
    chunk_tokens: int = Field(default=768, ge=64, le=8192)

    @property
    def is_local(self) -> bool:
        return self.env in ("local", "test")

    @model_validator(mode="after")
    def _production_needs_real_backends(self) -> CommonSettings:
        if not self.is_local and self.database_url.startswith("sqlite"):
            raise ValueError("PRECIS_DATABASE_URL must name a server database (PostgreSQL) outside local mode")
        return self


def refuse_default_secret(settings: CommonSettings, name: str, value: SecretStr | str | None, default: str) -> None:
    """Fail fast when a secret still holds its documented default outside local mode."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not settings.is_local and raw == default:
        raise ValueError(f"{name} still has its default value; set a real secret for PRECIS_ENV={settings.env}")


@lru_cache
def common_settings() -> CommonSettings:
    return CommonSettings()
