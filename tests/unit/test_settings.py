"""Settings composed per component (common/settings.py): each service declares only the pieces it
uses, accepts its own env, needs nothing it does not read, and keeps the fail-fast rules."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from async_svc.config import AsyncSettings
from common import paths
from common.settings import (
    ChunkingSettings,
    CommonSettings,
    HttpServerSettings,
    InternalAuthSettings,
    KafkaSettings,
    PrecisSettings,
    PublicUrlSettings,
    RealtimeLimitSettings,
    StoreSettings,
    TokenizerSettings,
    TritonSettings,
    cache_dir,
    load_settings,
)
from gateway.config import DEFAULT_DEV_API_KEY, GatewaySettings, hash_key
from notifier.config import DEFAULT_WEBHOOK_SECRET, NotifierSettings, dev_webhook_secret
from realtime_svc.config import RealtimeSettings
from worker.config import WorkerSettings

PG = "postgresql+asyncpg://precis:pw@db.internal:5432/precis"
WEBHOOK = "whsec_" + base64.b64encode(b"a-real-signing-secret-for-tests").decode()
API_KEYS = json.dumps({hash_key("k1"): "acme"})
INTERNAL = "an-internal-token-secret-for-the-tests-0001"  # PRECIS_INTERNAL_TOKEN_SECRET

# service settings class -> the pieces it is composed of (and nothing else)
COMPOSITION: dict[type[PrecisSettings], set[type[PrecisSettings]]] = {
    GatewaySettings: {
        HttpServerSettings,
        TokenizerSettings,
        PublicUrlSettings,
        InternalAuthSettings,
        ChunkingSettings,
        RealtimeLimitSettings,
    },
    RealtimeSettings: {
        HttpServerSettings,
        TokenizerSettings,
        TritonSettings,
        InternalAuthSettings,
        RealtimeLimitSettings,
    },
    AsyncSettings: {HttpServerSettings, StoreSettings, KafkaSettings, InternalAuthSettings},
    WorkerSettings: {
        HttpServerSettings,
        StoreSettings,
        KafkaSettings,
        TritonSettings,
        TokenizerSettings,
        ChunkingSettings,
    },
    NotifierSettings: {HttpServerSettings, StoreSettings, KafkaSettings, PublicUrlSettings},
}
PIECES = {
    HttpServerSettings,
    StoreSettings,
    KafkaSettings,
    TritonSettings,
    TokenizerSettings,
    PublicUrlSettings,
    InternalAuthSettings,
    ChunkingSettings,
    RealtimeLimitSettings,
}

# The production env each service needs (as the chart renders it), and no more.
PRODUCTION_ENV: dict[type[PrecisSettings], dict[str, str]] = {
    GatewaySettings: {"PRECIS_API_KEYS": API_KEYS, "PRECIS_INTERNAL_TOKEN_SECRET": INTERNAL},
    RealtimeSettings: {"PRECIS_INTERNAL_TOKEN_SECRET": INTERNAL},
    AsyncSettings: {"PRECIS_DATABASE_URL": PG, "PRECIS_INTERNAL_TOKEN_SECRET": INTERNAL},
    WorkerSettings: {"PRECIS_DATABASE_URL": PG},
    NotifierSettings: {"PRECIS_DATABASE_URL": PG, "PRECIS_WEBHOOK_SECRETS": json.dumps({"acme": [WEBHOOK]})},
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Only what a test sets: no PRECIS_* from the shell that runs the tests."""
    import os

    for k in [k for k in os.environ if k.startswith("PRECIS_") and k not in ("PRECIS_CACHE", "PRECIS_VENV")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("PRECIS_ENV", "local")  # the one variable every process needs (no default)


def _own_fields(piece: type[PrecisSettings]) -> set[str]:
    return set(piece.model_fields) - set(PrecisSettings.model_fields)


@pytest.mark.parametrize("cls", list(COMPOSITION), ids=lambda c: c.__name__)
def test_each_service_composes_only_its_pieces(cls):
    pieces = {p for p in PIECES if issubclass(cls, p)}
    assert pieces == COMPOSITION[cls]
    for p in PIECES - pieces:
        assert not (_own_fields(p) & set(cls.model_fields)), f"{cls.__name__} has fields of {p.__name__}"


def test_pieces_do_not_share_fields():
    seen: dict[str, str] = {}
    for p in PIECES:
        for f in _own_fields(p):
            assert f not in seen, f"{f} is in {p.__name__} and {seen[f]}"
            seen[f] = p.__name__


def test_gateway_and_realtime_read_no_database_or_broker():
    for cls in (GatewaySettings, RealtimeSettings):
        assert "database_url" not in cls.model_fields
        assert not any(f.startswith("kafka_") for f in cls.model_fields)
    assert not any(f.startswith("triton_") for f in GatewaySettings.model_fields)


@pytest.mark.parametrize("cls", list(COMPOSITION), ids=lambda c: c.__name__)
def test_local_defaults_need_only_the_mode(cls):
    s = cls()
    assert s.env == "local" and s.is_local
    assert s.model_config["env_prefix"] == "PRECIS_" and s.model_config["frozen"]


@pytest.mark.parametrize("cls", [*COMPOSITION, *PIECES, CommonSettings], ids=lambda c: c.__name__)
@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_no_mode_no_start(cls, value, monkeypatch):
    """PRECIS_ENV has no default (it was "local": dev key, dev webhook secret and SQLite for a
    deployment that forgot it): every settings class refuses, saying what to set."""
    if value is None:
        monkeypatch.delenv("PRECIS_ENV")
    else:
        monkeypatch.setenv("PRECIS_ENV", value)
    with pytest.raises(ValidationError, match="PRECIS_ENV is not set") as info:
        cls()
    assert all(f"PRECIS_ENV={mode}" in str(info.value) for mode in ("local", "test", "production"))
    with pytest.raises(SystemExit) as stop:
        load_settings(cls)
    assert str(stop.value.code).startswith(f"precis: invalid {cls.__name__}; the process did not start:")
    assert "PRECIS_ENV is not set: set PRECIS_ENV=local" in str(stop.value.code)


@pytest.mark.parametrize("cls", list(COMPOSITION), ids=lambda c: c.__name__)
def test_production_starts_from_its_own_env_alone(cls, monkeypatch):
    monkeypatch.setenv("PRECIS_ENV", "production")
    for k, v in PRODUCTION_ENV[cls].items():
        monkeypatch.setenv(k, v)
    s = cls()
    assert s.env == "production" and not s.is_local


@pytest.mark.parametrize("cls", [GatewaySettings, RealtimeSettings], ids=lambda c: c.__name__)
def test_a_database_url_in_the_env_is_ignored_where_unused(cls, monkeypatch):
    monkeypatch.setenv("PRECIS_ENV", "production")
    monkeypatch.setenv("PRECIS_DATABASE_URL", "sqlite+aiosqlite:///x.db")  # would be refused by the store
    for k, v in PRODUCTION_ENV[cls].items():
        monkeypatch.setenv(k, v)
    assert not hasattr(cls(), "database_url")


@pytest.mark.parametrize(
    "cls", [AsyncSettings, WorkerSettings, NotifierSettings, CommonSettings], ids=lambda c: c.__name__
)
def test_the_store_refuses_sqlite_outside_local_mode(cls, monkeypatch):
    monkeypatch.setenv("PRECIS_ENV", "production")
    for k, v in PRODUCTION_ENV.get(cls, {}).items():
        if k != "PRECIS_DATABASE_URL":
            monkeypatch.setenv(k, v)
    with pytest.raises(ValidationError, match="PRECIS_DATABASE_URL must name a server database"):
        cls()
    monkeypatch.setenv("PRECIS_ENV", "test")
    assert cls().database_url.startswith("sqlite+aiosqlite:///")


def test_default_dev_api_key_refused_outside_local_mode(monkeypatch):
    monkeypatch.setenv("PRECIS_ENV", "production")
    monkeypatch.setenv("PRECIS_API_KEYS", API_KEYS)
    monkeypatch.setenv("PRECIS_INTERNAL_TOKEN_SECRET", INTERNAL)
    monkeypatch.setenv("PRECIS_DEV_API_KEY", DEFAULT_DEV_API_KEY)
    with pytest.raises(ValidationError, match="PRECIS_DEV_API_KEY still has its default value"):
        GatewaySettings()
    monkeypatch.setenv("PRECIS_ENV", "local")
    assert GatewaySettings().key_table()[hash_key(DEFAULT_DEV_API_KEY)] == "dev"


def test_gateway_refuses_no_api_keys_outside_local_mode(monkeypatch):
    monkeypatch.setenv("PRECIS_ENV", "production")
    monkeypatch.setenv("PRECIS_INTERNAL_TOKEN_SECRET", INTERNAL)
    with pytest.raises(ValidationError, match="PRECIS_API_KEYS is empty"):
        GatewaySettings()


def test_default_webhook_secret_refused_outside_local_mode(monkeypatch):
    monkeypatch.setenv("PRECIS_ENV", "production")
    monkeypatch.setenv("PRECIS_DATABASE_URL", PG)
    # no secrets configured: the notifier starts, and refuses to sign for any tenant
    assert NotifierSettings().webhook_secrets_for("acme") == ()
    for published in (DEFAULT_WEBHOOK_SECRET, dev_webhook_secret("acme")):
        monkeypatch.setenv("PRECIS_WEBHOOK_SECRETS", json.dumps({"acme": [published]}))
        with pytest.raises(ValidationError, match="is a published dev secret"):
            NotifierSettings()
    monkeypatch.setenv("PRECIS_WEBHOOK_SECRETS", json.dumps({"acme": [WEBHOOK]}))
    assert [x.get_secret_value() for x in NotifierSettings().webhook_secrets_for("acme")] == [WEBHOOK]


def test_fault_injection_refused_outside_local_mode(monkeypatch):
    monkeypatch.setenv("PRECIS_ENV", "production")
    monkeypatch.setenv("PRECIS_DATABASE_URL", PG)
    monkeypatch.setenv("PRECIS_INTERNAL_TOKEN_SECRET", INTERNAL)
    monkeypatch.setenv("PRECIS_FAULT_INJECT", "crash_before_commit")
    with pytest.raises(ValidationError, match="PRECIS_FAULT_INJECT is for tests only"):
        AsyncSettings()


def test_env_var_names_are_unchanged(monkeypatch, tmp_path):
    """Every piece still reads PRECIS_<FIELD>, the names the chart, scripts and docs use."""
    env = {
        "PRECIS_PORT": "9999",
        "PRECIS_DATABASE_URL": PG,
        "PRECIS_KAFKA_BOOTSTRAP_SERVERS": "b1:9092,b2:9092",
        "PRECIS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "PRECIS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "PRECIS_KAFKA_SASL_USERNAME": "precis",
        "PRECIS_KAFKA_SASL_PASSWORD": "pw",
        "PRECIS_KAFKA_JOBS_PARTITIONS": "12",
        "PRECIS_KAFKA_EVENTS_PARTITIONS": "3",
        "PRECIS_KAFKA_REPLICATION_FACTOR": "3",
        "PRECIS_TRITON_GRPC_URL": "triton:8001",
        "PRECIS_TRITON_MODEL": "m",
        "PRECIS_TOKENIZER_PATH": str(tmp_path / "tok.json"),
        "PRECIS_CHUNK_TOKENS": "128",
        "PRECIS_LOG_LEVEL": "DEBUG",
        "PRECIS_SERVICE_NAME": "w-0",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    w = WorkerSettings()
    assert (w.port, w.database_url, w.kafka_bootstrap_servers, w.kafka_security_protocol) == (
        9999,
        PG,
        "b1:9092,b2:9092",
        "SASL_SSL",
    )
    assert (w.kafka_sasl_mechanism, w.kafka_sasl_username) == ("SCRAM-SHA-512", "precis")
    assert w.kafka_sasl_password is not None and w.kafka_sasl_password.get_secret_value() == "pw"
    assert (w.kafka_jobs_partitions, w.kafka_events_partitions, w.kafka_replication_factor) == (12, 3, 3)
    assert (w.triton_grpc_url, w.triton_model, w.tokenizer_path) == ("triton:8001", "m", tmp_path / "tok.json")
    assert (w.chunk_tokens, w.log_level, w.service_name) == (128, "DEBUG", "w-0")
    monkeypatch.setenv("PRECIS_PUBLIC_BASE_URL", "https://precis.example")
    assert GatewaySettings().public_base_url == NotifierSettings().public_base_url == "https://precis.example"


def test_service_names_default_per_service():
    names = {cls: cls().service_name for cls in COMPOSITION}
    assert names == {
        GatewaySettings: "gateway",
        RealtimeSettings: "realtime_svc",
        AsyncSettings: "async_svc",
        WorkerSettings: "worker",
        NotifierSettings: "notifier",
    }


def test_out_of_range_values_fail_fast(monkeypatch):
    monkeypatch.setenv("PRECIS_KAFKA_REPLICATION_FACTOR", "0")
    with pytest.raises(ValidationError, match="kafka_replication_factor"):
        AsyncSettings()
    with pytest.raises(ValidationError, match="kafka_replication_factor"):
        KafkaSettings()
    # a piece a service does not compose is not validated there
    assert RealtimeSettings().triton_model == "summarizer"


def test_cache_dir_is_defined_once(monkeypatch, tmp_path):
    monkeypatch.delenv("PRECIS_CACHE", raising=False)
    assert cache_dir() == paths.DEFAULT_CACHE_DIR == Path.home() / ".cache" / "precis"
    monkeypatch.setenv("PRECIS_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.setenv("PRECIS_CACHE", "")
    assert cache_dir() == paths.DEFAULT_CACHE_DIR
