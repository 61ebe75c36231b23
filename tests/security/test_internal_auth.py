"""Issue #14 item 7: realtime_svc and async_svc serve only calls the gateway signed.

The tenant used to come from a bare ``X-Precis-Tenant`` header: anyone who reached :8082 could
read or cancel any tenant's job. Now each internal call carries the gateway's HS256 token, bound
to tenant, service, method, path, body and Idempotency-Key (common/internal_auth.py).

In process (httpx.ASGITransport, the services' own apps, as tests/unit/test_*_inprocess.py):
every way a direct call can lack or fake the credential is a 401 problem naming what is wrong and
never echoing the token. Real processes: async_svc and realtime_svc started as `make run` starts
them, called directly (401) and through a real gateway that shares their secret (works).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from pydantic import SecretStr, ValidationError

from async_svc.app import create_app as create_async_app
from async_svc.config import AsyncSettings
from async_svc.deps import State as AsyncState
from async_svc.intake import GroupCommitter
from common.appstate import set_state
from common.internal_auth import InternalTokenAuth, body_digest, sign
from common.migrate import upgrade
from common.outbox import OutboxRelay
from common.settings import DEV_INTERNAL_TOKEN_SECRET
from common.store import Database
from common.tokenization import TokenCounter
from common.triton_client import TritonResult
from devstack import INTERNAL_TOKEN_SECRET, PORTS, child_env, start_service
from gateway.config import GatewaySettings
from realtime_svc.app import create_app as create_realtime_app
from realtime_svc.config import RealtimeSettings
from realtime_svc.deps import State as RealtimeState
from tests.asserts import assert_problem

KEY = "in-process-internal-secret-0123456789abcdef"
OLD_KEY = "the-previous-internal-secret-0123456789ab"  # still accepted during a rotation
PROD_DB = "postgresql+asyncpg://precis:pw@db.example.internal:5432/precis"


# ---- in process ------------------------------------------------------------------------------


class Svc:
    def __init__(self, client: httpx.AsyncClient, audience: str, triton: RecordingTriton | None = None) -> None:
        self.client = client
        self.audience = audience
        self.triton = triton


@pytest.fixture
async def async_svc(tmp_path: Path) -> AsyncIterator[Svc]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'precis.db'}"
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    settings = AsyncSettings(env="test", database_url=url, internal_token_secret=SecretStr(f"{KEY},{OLD_KEY}"))
    committer = GroupCommitter(db, max_batch=8)
    committer.start()
    app = create_async_app()
    set_state(app, AsyncState(settings, db, OutboxRelay(db, producer=None), committer))  # type: ignore[arg-type]
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://async.test")
    try:
        yield Svc(client, "async_svc")
    finally:
        await client.aclose()
        await committer.stop()
        await db.close()


class RecordingTriton:
    """realtime_svc's Triton client: counts the calls that got past auth."""

    def __init__(self) -> None:
        self.calls = 0

    async def summarize(self, *args: Any, **kwargs: Any) -> TritonResult:
        self.calls += 1
        return TritonResult("a summary", 5, 2, "fake-model")

    async def ready(self, timeout_s: float = 1.0) -> bool:
        return True


@pytest.fixture
async def realtime_svc() -> AsyncIterator[Svc]:
    settings = RealtimeSettings(env="test", internal_token_secret=SecretStr(f"{KEY},{OLD_KEY}"))
    app = create_realtime_app()
    triton = RecordingTriton()
    set_state(app, RealtimeState(settings, triton, TokenCounter()))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rt.test") as client:
        yield Svc(client, "realtime_svc", triton)


def token(
    svc: Svc,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    key: str = KEY,
    tenant: str = "acme",
    audience: str | None = None,
    idem: str | None = None,
    now: float | None = None,
    ttl_s: int = 30,
) -> str:
    return sign(
        key,
        tenant=tenant,
        audience=audience or svc.audience,
        method=method,
        path=path,
        digest=body_digest(body),
        idempotency_key=idem,
        now=now,
        ttl_s=ttl_s,
    )


def endpoint(svc: Svc) -> tuple[str, str, bytes]:
    """The service's main call: method, path, a valid JSON body."""
    if svc.audience == "async_svc":
        return "POST", "/internal/jobs", json.dumps({"text": "A document to summarize."}).encode()
    return "POST", "/internal/summarize", json.dumps({"text": "A short text.", "request_id": "r1"}).encode()


def tamper_tenant(tok: str, tenant: str) -> str:
    """The same token with its payload's tenant rewritten (the signature left as it was)."""
    head, payload, sig = tok.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = tenant
    new = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{new}.{sig}"


def unsigned_token(svc: Svc, path: str, body: bytes) -> str:
    """alg=none: a token with no signature at all."""
    claims = {"sub": "acme", "aud": svc.audience, "mth": "POST", "pth": path, "bh": body_digest(body), "idk": None}
    claims |= {"iat": int(time.time()), "exp": int(time.time()) + 30}
    return jwt.encode(claims, None, algorithm="none")


# (name, headers for the call given (svc, method, path, body), what the 401's detail names)
BAD: list[tuple[str, Callable[[Svc, str, str, bytes], dict[str, str]], str]] = [
    ("no credential", lambda s, m, p, b: {}, "no Authorization header"),
    ("the old bare tenant header", lambda s, m, p, b: {"X-Precis-Tenant": "acme"}, "no Authorization header"),
    ("not Bearer", lambda s, m, p, b: {"Authorization": f"Basic {token(s, m, p, b)}"}, "must be 'Bearer"),
    ("a public API key", lambda s, m, p, b: {"Authorization": "Bearer precis-dev-key"}, "malformed"),
    ("forged: another key", lambda s, m, p, b: _bearer(token(s, m, p, b, key="x" * 40)), "signature is not valid"),
    (
        "forged: the public dev key",
        lambda s, m, p, b: _bearer(token(s, m, p, b, key=DEV_INTERNAL_TOKEN_SECRET)),
        "signature",
    ),
    ("forged: alg none", lambda s, m, p, b: _bearer(unsigned_token(s, p, b)), "malformed"),
    ("tenant rewritten", lambda s, m, p, b: _bearer(tamper_tenant(token(s, m, p, b), "other")), "signature"),
    ("expired", lambda s, m, p, b: _bearer(token(s, m, p, b, now=time.time() - 120)), "expired"),
    ("issued in the future", lambda s, m, p, b: _bearer(token(s, m, p, b, now=time.time() + 600)), "not valid yet"),
    ("for the other service", lambda s, m, p, b: _bearer(token(s, m, p, b, audience="worker")), "not for"),
    ("for another path", lambda s, m, p, b: _bearer(token(s, m, p + "x", b)), "another method or path"),
    ("for another method", lambda s, m, p, b: _bearer(token(s, "GET", p, b)), "another method or path"),
    ("for another body", lambda s, m, p, b: _bearer(token(s, m, p, b + b" ")), "another request body"),
    ("for another Idempotency-Key", lambda s, m, p, b: _bearer(token(s, m, p, b, idem="k1")), "Idempotency-Key"),
]


def _bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


@pytest.fixture(params=["async_svc", "realtime_svc"])
def svc(request: pytest.FixtureRequest) -> Svc:
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize(("case", "make_headers", "named"), BAD, ids=[b[0] for b in BAD])
async def test_a_direct_call_without_a_valid_token_is_401(
    svc: Svc, case: str, make_headers: Callable[[Svc, str, str, bytes], dict[str, str]], named: str
) -> None:
    method, path, body = endpoint(svc)
    headers = {"Content-Type": "application/json", **make_headers(svc, method, path, body)}
    r = await svc.client.request(method, path, content=body, headers=headers)
    doc = assert_problem(r, 401, "internal-unauthorized")
    assert named in doc["detail"], doc
    assert r.headers["www-authenticate"].startswith("Bearer")
    sent = headers.get("Authorization", "").partition(" ")[2]
    for part in [sent, *sent.split(".")]:  # the token is never echoed, in whole or in part
        assert not part or part not in r.text
    if svc.triton is not None:
        assert svc.triton.calls == 0


async def test_the_same_call_with_a_valid_token_is_served(svc: Svc) -> None:
    """The counterpart of every 401 above: nothing else in those calls was wrong."""
    method, path, body = endpoint(svc)
    for key in (KEY, OLD_KEY):  # a rotation: the first key signs, every listed key verifies
        r = await svc.client.request(
            method,
            path,
            content=body,
            headers={"Content-Type": "application/json", **_bearer(token(svc, method, path, body, key=key))},
        )
        assert r.status_code == (202 if svc.audience == "async_svc" else 200), r.text
    if svc.triton is not None:
        assert svc.triton.calls == 2


async def test_a_401_comes_before_the_body_is_judged(svc: Svc) -> None:
    """An unauthenticated caller learns nothing about the API from validation errors."""
    r = await svc.client.post(endpoint(svc)[1], json={"colour": "blue"})
    assert_problem(r, 401, "internal-unauthorized")


async def test_probes_and_metrics_stay_open(svc: Svc) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await svc.client.get(path)).status_code != 401, path


async def test_the_tenant_is_the_tokens_not_a_header(async_svc: Svc) -> None:
    """A's valid token with a header claiming B acts as A; A's token cannot be pointed at B's job."""
    as_b = InternalTokenAuth(KEY, "tenant-b", "async_svc")
    r = await async_svc.client.post("/internal/jobs", json={"text": "B's document."}, auth=as_b)
    assert r.status_code == 202, r.text
    b_job = r.json()["id"]
    as_a = InternalTokenAuth(KEY, "tenant-a", "async_svc")
    r = await async_svc.client.get(f"/internal/jobs/{b_job}", headers={"X-Precis-Tenant": "tenant-b"}, auth=as_a)
    assert_problem(r, 404, "not-found")  # exactly like an unknown id
    assert (await async_svc.client.get(f"/internal/jobs/{b_job}", auth=as_b)).status_code == 200
    # a token for B's read does not cancel it, nor read another job
    read = _bearer(token(async_svc, "GET", f"/internal/jobs/{b_job}", tenant="tenant-b"))
    assert_problem(await async_svc.client.delete(f"/internal/jobs/{b_job}", headers=read), 401, "internal-unauthorized")
    other = f"/internal/jobs/{uuid.uuid4()}"
    assert_problem(await async_svc.client.get(other, headers=read), 401, "internal-unauthorized")


# ---- settings --------------------------------------------------------------------------------


def _clear_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for k in [k for k in os.environ if k.startswith("PRECIS_")]:
        monkeypatch.delenv(k)


@pytest.mark.parametrize(
    ("cls", "extra"),
    [
        (GatewaySettings, {"api_keys": SecretStr('{"ab": "t"}')}),
        (AsyncSettings, {"database_url": PROD_DB}),
        (RealtimeSettings, {}),
    ],
)
def test_outside_local_mode_the_secret_is_required_and_never_printed(
    monkeypatch: pytest.MonkeyPatch, cls: type, extra: dict[str, Any]
) -> None:
    _clear_env(monkeypatch)
    with pytest.raises(ValidationError, match="PRECIS_INTERNAL_TOKEN_SECRET is not set"):
        cls(env="production", **extra)
    short = "short-secret-value-Zq81"
    monkeypatch.setenv("PRECIS_INTERNAL_TOKEN_SECRET", short)
    with pytest.raises(ValidationError, match="at least 32 characters") as exc:
        cls(env="production", **extra)
    assert short not in str(exc.value) and short[-6:] not in str(exc.value)
    monkeypatch.setenv("PRECIS_INTERNAL_TOKEN_SECRET", DEV_INTERNAL_TOKEN_SECRET)
    with pytest.raises(ValidationError, match="default value") as exc:
        cls(env="production", **extra)
    assert DEV_INTERNAL_TOKEN_SECRET[-6:] not in str(exc.value)
    monkeypatch.setenv("PRECIS_INTERNAL_TOKEN_SECRET", f"{KEY},{OLD_KEY}")
    assert cls(env="production", **extra).internal_token_keys() == [KEY, OLD_KEY]


def test_local_mode_has_the_documented_dev_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_env(monkeypatch)
    assert RealtimeSettings(env="local").internal_token_keys() == [DEV_INTERNAL_TOKEN_SECRET]


# ---- real processes --------------------------------------------------------------------------


class Stack:
    def __init__(self, gateway: str, async_url: str, realtime_url: str) -> None:
        self.gateway = gateway
        self.async_url = async_url
        self.realtime_url = realtime_url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka_broker: str) -> Iterator[Stack]:
    """async_svc (real store + broker), realtime_svc (no Triton: it answers 503 once a call is
    let in) and the gateway, as processes with one secret, the way `make run` passes it."""
    var = tmp_path_factory.mktemp("internal-auth")
    db = f"sqlite+aiosqlite:///{var / 'precis.db'}"
    upgrade(db)
    gw, asy, rt = PORTS.one(), PORTS.one(), PORTS.one()
    env = child_env(
        var,
        PRECIS_ENV="local",
        PRECIS_DATABASE_URL=db,
        PRECIS_KAFKA_BOOTSTRAP_SERVERS=kafka_broker,
        PRECIS_TRITON_GRPC_URL=f"127.0.0.1:{PORTS.one()}",  # nothing listens
        PRECIS_REALTIME_URL=f"http://127.0.0.1:{rt}",
        PRECIS_ASYNC_URL=f"http://127.0.0.1:{asy}",
    )
    assert env["PRECIS_INTERNAL_TOKEN_SECRET"] == INTERNAL_TOKEN_SECRET
    procs = []
    try:
        procs.append(start_service("async_svc", asy, env, var / "async_svc.log", timeout=180))
        procs.append(start_service("realtime_svc", rt, env, var / "realtime_svc.log"))
        procs.append(start_service("gateway", gw, env, var / "gateway.log"))
        yield Stack(f"http://127.0.0.1:{gw}", f"http://127.0.0.1:{asy}", f"http://127.0.0.1:{rt}")
    finally:
        for p in reversed(procs):
            p.stop()


GW_AUTH = {"Authorization": "Bearer precis-dev-key"}  # the gateway's local dev key: tenant "dev"


def test_real_async_svc_refuses_direct_calls(stack: Stack) -> None:
    with httpx.Client(base_url=stack.async_url, timeout=30) as c:
        # what an attacker on the pod network sent before: a bare tenant header
        r = c.post("/internal/jobs", json={"text": "x"}, headers={"X-Precis-Tenant": "dev"})
        assert_problem(r, 401, "internal-unauthorized")
        assert_problem(
            c.get(f"/internal/jobs/{uuid.uuid4()}", headers={"X-Precis-Tenant": "dev"}), 401, "internal-unauthorized"
        )
        forged = sign(
            "f" * 40,
            tenant="dev",
            audience="async_svc",
            method="POST",
            path="/internal/jobs",
            digest=body_digest(b"{}"),
        )
        r = c.post("/internal/jobs", content=b"{}", headers={"Content-Type": "application/json", **_bearer(forged)})
        assert "signature" in assert_problem(r, 401, "internal-unauthorized")["detail"]
        assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 200


def test_real_realtime_svc_refuses_direct_calls(stack: Stack) -> None:
    r = httpx.post(f"{stack.realtime_url}/internal/summarize", json={"text": "x", "request_id": "r"}, timeout=30)
    assert_problem(r, 401, "internal-unauthorized")
    body = json.dumps({"text": "x", "request_id": "r"}).encode()
    old = sign(
        INTERNAL_TOKEN_SECRET,  # the right key, two minutes ago
        tenant="dev",
        audience="realtime_svc",
        method="POST",
        path="/internal/summarize",
        digest=body_digest(body),
        now=time.time() - 120,
    )
    headers = {"Content-Type": "application/json", **_bearer(old)}
    r = httpx.post(f"{stack.realtime_url}/internal/summarize", content=body, headers=headers, timeout=30)
    assert "expired" in assert_problem(r, 401, "internal-unauthorized")["detail"]


def test_through_the_gateway_it_works(stack: Stack) -> None:
    with httpx.Client(base_url=stack.gateway, headers=GW_AUTH, timeout=60) as c:
        r = c.post(
            "/v1/summaries",
            json={"text": "A long document. " * 20, "mode": "async"},
            headers={"Idempotency-Key": "ia-1"},
        )
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        assert c.get(f"/v1/summaries/{job}").json()["status"] in ("queued", "running")
        assert c.delete(f"/v1/summaries/{job}").status_code == 200
        # realtime: let in (the 503 is the missing Triton behind it, not a refused credential)
        r = c.post("/v1/summaries", json={"text": "A short text.", "mode": "realtime"})
        assert_problem(r, 503, "model-unavailable")
    # and the job is the gateway tenant's: signed calls as another tenant do not see it
    as_other = InternalTokenAuth(INTERNAL_TOKEN_SECRET, "someone-else", "async_svc")
    assert_problem(httpx.get(f"{stack.async_url}/internal/jobs/{job}", auth=as_other, timeout=30), 404, "not-found")
    as_dev = InternalTokenAuth(INTERNAL_TOKEN_SECRET, "dev", "async_svc")
    assert httpx.get(f"{stack.async_url}/internal/jobs/{job}", auth=as_dev, timeout=30).json()["status"] == "cancelled"
