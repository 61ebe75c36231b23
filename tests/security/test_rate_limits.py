"""Rate limits that hold across gateway replicas (issue #14 items 4 and 9): two real gateway
processes sharing one real Redis (the `redis_url` session fixture), requests alternated between
them.

* the tenant's request limit is reached at the global count, not at twice it;
* request-body bytes are a quota of their own (a body costs its size);
* the IETF RateLimit header fields on answers and on the 429, with Retry-After;
* failed authentication is throttled per client address (a right key included, once locked);
* Redis down: fail-open keeps serving (counted per replica) and /readyz says so; fail-closed
  answers 503 and is unready; both recover when Redis is back.

The gateways' upstreams are closed ports: every request used here is answered by the gateway
itself (404 for a job id that is not a UUID, 422 for an invalid body), after its limits.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack import PORTS, Proc, child_env, start_service
from devstack.redis import redis_bin, start_redis
from gateway.config import hash_key

PER_MINUTE = 10
BYTES_PER_MINUTE = 20_000
MAX_BODY = 8192
FAILED_AUTH = 5
TENANT_KEYS = {f"k-{t}": t for t in ("count", "bytes", "headers", "auth", "open", "closed")}
POLICY = f'{PER_MINUTE};w=60;name="requests", {BYTES_PER_MINUTE};w=60;name="bytes"'
NOT_A_UUID = "/v1/summaries/not-a-job-id"  # authenticated and limited, then 404 with no hop


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def gateway_env(var: Path, storage_uri: str, **extra: str) -> dict[str, str]:
    return child_env(
        var,
        PRECIS_REALTIME_URL=f"http://127.0.0.1:{PORTS.one()}",  # nothing listens: never reached
        PRECIS_ASYNC_URL=f"http://127.0.0.1:{PORTS.one()}",
        PRECIS_API_KEYS=json.dumps({hash_key(k): t for k, t in TENANT_KEYS.items()}),
        PRECIS_RATE_LIMIT_STORAGE_URI=storage_uri,
        PRECIS_RATE_LIMIT_PER_MINUTE=str(PER_MINUTE),
        PRECIS_RATE_LIMIT_BYTES_PER_MINUTE=str(BYTES_PER_MINUTE),
        PRECIS_MAX_REQUEST_BYTES=str(MAX_BODY),
        PRECIS_RATE_LIMIT_FAILED_AUTH_PER_MINUTE=str(FAILED_AUTH),
        **extra,
    )


def start_gateways(var: Path, envs: list[dict[str, str]]) -> tuple[list[Proc], list[str]]:
    procs: list[Proc] = []
    try:
        for i, env in enumerate(envs):
            port = PORTS.one()
            procs.append(start_service("gateway", port, env, var / f"gateway-{i}.log", name=f"gateway-{i}"))
    except BaseException:
        for p in procs:
            p.stop()
        raise
    return procs, [f"http://127.0.0.1:{p.port}" for p in procs]


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[list[str]]:
    """Two gateway processes, one Redis (database 0)."""
    var = tmp_path_factory.mktemp("gw-pair")
    procs, urls = start_gateways(var, [gateway_env(var, redis_url) for _ in range(2)])
    yield urls
    for p in procs:
        p.stop()


@pytest.fixture(scope="module")
def auth_gateways(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[list[str]]:
    """Two more gateways on their own Redis database: the failed-auth test locks out 127.0.0.1,
    the address every test here comes from, and must not lock out the other tests."""
    var = tmp_path_factory.mktemp("gw-auth")
    uri = redis_url.rsplit("/", 1)[0] + "/1"
    procs, urls = start_gateways(var, [gateway_env(var, uri) for _ in range(2)])
    yield urls
    for p in procs:
        p.stop()


def assert_429(r: httpx.Response, limit: str, value: int, remaining: int = 0) -> dict:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert doc["type"].endswith("/rate-limited") and doc["status"] == 429
    assert (doc["limit"], doc["limit_value"], doc["window_s"]) == (limit, value, 60)
    assert f"limit of {value} " in doc["detail"]
    assert r.headers["ratelimit-limit"] == str(value)
    assert r.headers["ratelimit-remaining"] == str(remaining)
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.headers["retry-after"] == r.headers["ratelimit-reset"]
    return doc


def test_tenant_limit_is_global_across_two_gateways(gateways: list[str]) -> None:
    statuses = [
        httpx.get(gateways[i % 2] + NOT_A_UUID, headers=auth("k-count"), timeout=10).status_code
        for i in range(2 * PER_MINUTE)
    ]
    # per replica, each gateway would have let PER_MINUTE through: 2 x PER_MINUTE in all
    assert statuses == [404] * PER_MINUTE + [429] * PER_MINUTE
    r = httpx.get(gateways[0] + NOT_A_UUID, headers=auth("k-count"), timeout=10)
    assert_429(r, "requests", PER_MINUTE)
    # another tenant is not affected
    assert httpx.get(gateways[1] + NOT_A_UUID, headers=auth("k-headers"), timeout=10).status_code == 404


def test_body_bytes_are_a_quota_of_their_own(gateways: list[str]) -> None:
    def post(gw: str, size: int, *, chunked: bool = False) -> httpx.Response:
        body = json.dumps({"text": "x" * (size - 100), "mode": "no-such-mode"}).encode()
        body += b" " * (size - len(body))  # exactly `size` bytes (JSON allows trailing whitespace)
        assert len(body) == size
        content: bytes | Iterator[bytes] = iter([body[:1000], body[1000:]]) if chunked else body
        hdrs = {**auth("k-bytes"), "Content-Type": "application/json"}
        return httpx.post(gw + "/v1/summaries", content=content, headers=hdrs, timeout=10)

    a, b = gateways
    assert post(a, 7000).status_code == 422  # charged, then refused for its mode
    assert post(b, 7000).status_code == 422  # 14,000 of 20,000 bytes used, across both
    # refused, not charged: 6,000 bytes are left, too few for this body
    doc = assert_429(post(a, 7000), "bytes", BYTES_PER_MINUTE, remaining=6000)
    assert "this body is 7000 bytes, 6000 left" in doc["detail"]
    assert_429(post(b, 7000, chunked=True), "bytes", BYTES_PER_MINUTE, remaining=6000)  # no Content-Length
    r = post(b, 5000)  # still fits: 19,000 used
    assert r.status_code == 422
    # five requests of ten used, 1,000 bytes of 20,000 left: the headers name the bytes limit
    assert (r.headers["ratelimit-limit"], r.headers["ratelimit-remaining"]) == (str(BYTES_PER_MINUTE), "1000")
    # the request count of a tenant whose bytes are spent is untouched
    assert httpx.get(a + NOT_A_UUID, headers=auth("k-bytes"), timeout=10).status_code == 404


def test_ratelimit_headers_count_down_across_gateways(gateways: list[str]) -> None:
    # k-headers made one request in the first test (modules run in file order)
    seen = []
    for i in range(PER_MINUTE - 1):
        r = httpx.get(gateways[i % 2] + NOT_A_UUID, headers=auth("k-headers"), timeout=10)
        assert r.status_code == 404
        assert r.headers["ratelimit-limit"] == str(PER_MINUTE)
        assert r.headers["ratelimit-policy"] == POLICY
        assert 0 <= int(r.headers["ratelimit-reset"]) <= 60
        seen.append(int(r.headers["ratelimit-remaining"]))
    assert seen == list(range(PER_MINUTE - 2, -1, -1))
    r = httpx.get(gateways[1] + NOT_A_UUID, headers=auth("k-headers"), timeout=10)
    assert_429(r, "requests", PER_MINUTE)
    assert r.headers["ratelimit-policy"] == POLICY


def test_failed_authentication_is_throttled_per_client_address(auth_gateways: list[str]) -> None:
    a, b = auth_gateways
    for i in range(FAILED_AUTH):
        r = httpx.get((a, b)[i % 2] + NOT_A_UUID, headers=auth(f"guess-{i}"), timeout=10)
        assert r.status_code == 401, r.text
    r = httpx.get(b + NOT_A_UUID, headers=auth("guess-next"), timeout=10)
    doc = assert_429(r, "failed-auth", FAILED_AUTH)
    assert "client address limit of 5 failed authentications per minute" in doc["detail"]
    # locked: a right key from this address is refused too (else the 429 is an oracle) ...
    assert_429(httpx.get(a + NOT_A_UUID, headers=auth("k-auth"), timeout=10), "failed-auth", FAILED_AUTH)
    # ... and so is a missing one; an X-Forwarded-For of another address is not trusted by default
    assert_429(httpx.get(a + NOT_A_UUID, timeout=10), "failed-auth", FAILED_AUTH)
    spoofed = {**auth("k-auth"), "X-Forwarded-For": "198.51.100.7"}
    assert_429(httpx.get(b + NOT_A_UUID, headers=spoofed, timeout=10), "failed-auth", FAILED_AUTH)


def test_redis_down_fail_open_counts_per_replica_fail_closed_refuses(tmp_path: Path) -> None:
    if redis_bin() is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    port, var = PORTS.one(), tmp_path  # a Redis of its own: this test stops it
    uri = f"redis://127.0.0.1:{port}/0"
    redis = start_redis(port, child_env(var), var / "redis.log", var / "data")
    procs: list[Proc] = []
    try:
        procs, (gw_open, gw_closed) = start_gateways(
            var,
            [
                gateway_env(var, uri, PRECIS_RATE_LIMIT_STORE_FAILURE="open"),
                gateway_env(var, uri, PRECIS_RATE_LIMIT_STORE_FAILURE="closed"),
            ],
        )
        for gw, key in ((gw_open, "k-open"), (gw_closed, "k-closed")):
            assert httpx.get(gw + NOT_A_UUID, headers=auth(key), timeout=10).status_code == 404
            assert httpx.get(gw + "/readyz", timeout=10).json()["rate_limits"]["store_reachable"] is True
        redis.stop()

        # fail open: still served, limits counted in this replica's memory meanwhile
        r = httpx.get(gw_open + "/readyz", timeout=10)
        assert r.status_code == 503  # the upstreams are down in this test, not the store ...
        assert "rate_limit_store" not in r.json()["checks"]  # ... which is no readiness check here
        assert r.json()["rate_limits"] == {
            "storage": "redis",
            "scope": "per-replica",
            "store_reachable": False,
            "on_store_failure": "open",
        }
        statuses = [
            httpx.get(gw_open + NOT_A_UUID, headers=auth("k-open"), timeout=10).status_code
            for _ in range(PER_MINUTE + 1)
        ]
        assert statuses == [404] * PER_MINUTE + [429]

        # fail closed: 503 naming the store, and unready
        r = httpx.get(gw_closed + NOT_A_UUID, headers=auth("k-closed"), timeout=10)
        assert r.status_code == 503 and r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["type"].endswith("/rate-limit-store-unavailable")
        assert int(r.headers["retry-after"]) >= 1
        ready = httpx.get(gw_closed + "/readyz", timeout=10).json()
        assert ready["checks"]["rate_limit_store"] is False and ready["rate_limits"]["on_store_failure"] == "closed"

        # Redis back (empty: no persistence): both count in it again
        redis = start_redis(port, child_env(var), var / "redis.log", var / "data")
        r = httpx.get(gw_closed + NOT_A_UUID, headers=auth("k-closed"), timeout=10)
        assert r.status_code == 404 and r.headers["ratelimit-remaining"] == str(PER_MINUTE - 1)
        assert httpx.get(gw_open + "/readyz", timeout=10).json()["rate_limits"]["store_reachable"] is True
        assert httpx.get(gw_open + NOT_A_UUID, headers=auth("k-open"), timeout=10).status_code == 404
    finally:
        for p in procs:
            p.stop()
        redis.stop()
