import json

import pytest

from gateway.config import GatewaySettings, hash_key
from gateway.ratelimit import TokenBucketLimiter


@pytest.fixture(autouse=True)
def internal_secret(monkeypatch):
    """Production settings need the internal token secret too (tests/security/test_internal_auth.py
    checks its rules); these tests are about the API keys."""
    monkeypatch.setenv("PRECIS_INTERNAL_TOKEN_SECRET", "an-internal-token-secret-for-the-tests-0001")


def test_token_bucket_allows_burst_then_limits_and_refills():
    lim = TokenBucketLimiter(per_minute=60, burst=3)
    assert [lim.take("t", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = lim.take("t", now=0.0)
    assert wait == pytest.approx(1.0)
    assert lim.take("t", now=1.01) == 0.0  # one token per second refilled
    assert lim.take("other", now=0.0) == 0.0  # tenants are independent


def test_dev_key_maps_to_dev_tenant_in_local_mode(monkeypatch):
    monkeypatch.setenv("PRECIS_ENV", "local")
    s = GatewaySettings()
    assert s.key_table()[hash_key("precis-dev-key")] == "dev"


@pytest.mark.parametrize("dev_key", ["precis-dev-key", "another-key"])
def test_production_refuses_a_dev_key(monkeypatch, dev_key):
    monkeypatch.setenv("PRECIS_ENV", "production")
    monkeypatch.setenv("PRECIS_DATABASE_URL", "postgresql+asyncpg://u@db/precis")
    monkeypatch.setenv("PRECIS_API_KEYS", json.dumps({hash_key("k1"): "acme"}))
    monkeypatch.setenv("PRECIS_DEV_API_KEY", dev_key)
    with pytest.raises(ValueError, match="PRECIS_DEV_API_KEY"):
        GatewaySettings()


def test_production_starts_from_env_alone_without_the_dev_key(monkeypatch):
    monkeypatch.setenv("PRECIS_ENV", "production")
    monkeypatch.setenv("PRECIS_DATABASE_URL", "postgresql+asyncpg://u@db/precis")
    monkeypatch.setenv("PRECIS_API_KEYS", json.dumps({hash_key("k1"): "acme"}))
    monkeypatch.delenv("PRECIS_DEV_API_KEY", raising=False)
    assert GatewaySettings().key_table() == {hash_key("k1"): "acme"}


def test_local_dev_key_can_be_disabled(monkeypatch):
    monkeypatch.setenv("PRECIS_DEV_API_KEY", "")
    assert hash_key("precis-dev-key") not in GatewaySettings().key_table()


def test_production_accepts_hashed_keys_only(monkeypatch):
    monkeypatch.setenv("PRECIS_ENV", "production")
    monkeypatch.setenv("PRECIS_DATABASE_URL", "postgresql+asyncpg://u@db/precis")
    monkeypatch.setenv("PRECIS_API_KEYS", json.dumps({hash_key("k1"): "acme"}))
    monkeypatch.setenv("PRECIS_DEV_API_KEY", "")
    s = GatewaySettings(dev_api_key=None)
    assert s.key_table() == {hash_key("k1"): "acme"}


def test_production_gateway_needs_no_database(monkeypatch):
    # issue #13: the internet-facing gateway has no store, so it neither reads nor requires a
    # database URL (the SQLite-in-production refusal moved to the services that use the store:
    # tests/unit/test_settings.py)
    monkeypatch.setenv("PRECIS_ENV", "production")
    monkeypatch.setenv("PRECIS_API_KEYS", json.dumps({hash_key("k1"): "acme"}))
    monkeypatch.delenv("PRECIS_DATABASE_URL", raising=False)
    s = GatewaySettings(dev_api_key=None)
    assert not hasattr(s, "database_url")


def test_bad_api_keys_json_fails_fast(monkeypatch):
    monkeypatch.setenv("PRECIS_API_KEYS", "not json")
    with pytest.raises(ValueError, match="PRECIS_API_KEYS"):
        GatewaySettings()
