import json

import pytest
from pydantic import ValidationError
from starlette.requests import Request

from gateway.config import GatewaySettings, hash_key
from gateway.ratelimit import RateLimits, Verdict


@pytest.fixture(autouse=True)
def internal_secret(monkeypatch):
    """Production settings need the internal token secret too (tests/security/test_internal_auth.py
    checks its rules); these tests are about the API keys."""
    monkeypatch.setenv("PRECIS_INTERNAL_TOKEN_SECRET", "an-internal-token-secret-for-the-tests-0001")


def _limits(**extra: object) -> RateLimits:
    return RateLimits(GatewaySettings(env="test", **extra))  # type: ignore[arg-type]


def _request(peer: str, headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "headers": raw, "client": (peer, 5000), "method": "GET", "path": "/"})


async def test_memory_limits_count_requests_and_body_bytes_per_tenant():
    lim = _limits(rate_limit_per_minute=3, rate_limit_bytes_per_minute=300_000, max_request_bytes=100_000)
    assert [(await lim.check(lim.requests, "acme")).allowed for _ in range(4)] == [True, True, True, False]
    assert (await lim.check(lim.requests, "other")).allowed  # tenants are independent
    v = await lim.check(lim.bytes, "acme", 250_000)
    assert (v.allowed, v.remaining) == (True, 50_000)
    v = await lim.check(lim.bytes, "acme", 60_000)  # a body that does not fit is refused, not charged
    assert (v.allowed, v.remaining) == (False, 50_000) and v.reset_s >= 1
    assert (await lim.check(lim.bytes, "acme", 50_000)).allowed


def test_rate_limit_headers_and_problem_name_the_limit():
    lim = _limits(rate_limit_per_minute=7)
    v = Verdict(lim.requests, allowed=False, remaining=0, reset_s=12)
    p = lim.problem(v)
    assert p.status == 429
    assert p.headers["RateLimit-Limit"] == "7" and p.headers["RateLimit-Remaining"] == "0"
    assert p.headers["RateLimit-Reset"] == "12" and p.headers["Retry-After"] == "12"
    assert p.headers["RateLimit-Policy"] == '7;w=60;name="requests", 100000000;w=60;name="bytes"'
    assert p.extra["limit"] == "requests" and p.extra["limit_value"] == 7
    assert "7 requests per minute" in p.detail


def test_client_address_ignores_forwarded_headers_unless_one_is_trusted():
    fwd = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}
    assert _limits().client_address(_request("127.0.0.1", fwd)) == "127.0.0.1"
    trusted = _limits(trusted_client_ip_header="X-Forwarded-For")
    assert trusted.client_address(_request("127.0.0.1", fwd)) == "203.0.113.9"  # the proxy's own entry
    assert trusted.client_address(_request("127.0.0.1")) == "127.0.0.1"  # header absent: the peer


def test_bytes_limit_below_the_body_limit_is_refused():
    with pytest.raises(ValueError, match="PRECIS_RATE_LIMIT_BYTES_PER_MINUTE"):
        GatewaySettings(env="test", rate_limit_bytes_per_minute=10_000, max_request_bytes=20_000)


def test_unknown_store_scheme_is_refused_naming_the_scheme_only():
    with pytest.raises(ValidationError, match="scheme 'mongodb'") as exc:
        GatewaySettings(env="test", rate_limit_storage_uri="mongodb://u:s3cret@db")  # type: ignore[arg-type]
    # the message names the scheme only (pydantic's own echo of the input is issue #14 item 6's)
    assert "s3cret" not in exc.value.errors()[0]["msg"]


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
