"""The gateway driven in process (httpx.ASGITransport, no port, no lifespan): content type, byte
limit, validation, auth, rate limit, routing by length or explicit mode, and how upstream answers
and failures become the gateway's answers.

The gateway's state is handed in through ``app.dependency_overrides``; its upstream client is
replaced by one that calls in-process fakes of realtime_svc and async_svc (ASGI apps), so what the
gateway sent each of them can be checked; the fakes check the gateway's internal token with the
real verifier (common/internal_auth.py), as realtime_svc and async_svc do. The real aiohttp hop,
keep-alive and resend-on-dead-connection are covered by the real-process tests in tests/gateway/."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import REGISTRY
from pydantic import SecretStr

from common.internal_auth import verify_request
from common.problems import PROBLEM_JSON, install_problem_handlers, type_uri
from common.settings import DEV_INTERNAL_TOKEN_SECRET
from common.streaming import SSE
from common.tokenization import TokenCounter
from gateway.app import create_app
from gateway.config import GatewaySettings, hash_key
from gateway.deps import State, get_state
from gateway.upstream import Upstream, UpstreamDown, UpstreamTimeout
from tests.asserts import assert_problem

REALTIME = "http://realtime.test"
ASYNC = "http://async.test"
KEY = "k-acme"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMIT = 4096  # max_request_bytes
THRESHOLD = 16  # routing_threshold_tokens
SHORT = "A short sentence to summarize."
LONG = " ".join(["The committee met again and discussed the budget at length."] * 20)


class FakeUpstreams:
    """In-process realtime_svc and async_svc: they record what the gateway sent them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = []
        self.tenants: list[str] = []  # from each call's verified internal token
        self.keys = [DEV_INTERNAL_TOKEN_SECRET]  # what the fake services accept
        self.realtime_answer: tuple[int, dict[str, Any], dict[str, str]] | None = None
        self.async_ready = True
        self.replayed = False
        self.realtime = FastAPI()
        self.asyncsvc = FastAPI()
        install_problem_handlers(self.realtime)  # a refused token: 401 problem, as the real ones
        install_problem_handlers(self.asyncsvc)

        async def verified(request: Request, audience: str) -> None:
            self.tenants.append((await verify_request(self.keys, request, audience)).tenant)

        @self.realtime.post("/internal/summarize")
        async def summarize(request: Request) -> Response:
            await verified(request, "realtime_svc")
            body = await request.json()
            self.calls.append(("realtime", "POST /internal/summarize", body, dict(request.headers)))
            if self.realtime_answer is not None:
                status, doc, headers = self.realtime_answer
                return JSONResponse(doc, status_code=status, headers=headers, media_type=PROBLEM_JSON)
            if body.get("stream"):
                return StreamingResponse(iter(STREAM_EVENTS), media_type=SSE)
            return JSONResponse(
                {
                    "id": body["request_id"],
                    "mode": "realtime",
                    "summary": "short.",
                    "model": "fake",
                    "usage": {"input_tokens": 5, "output_tokens": 2},
                    "timings": {},
                }
            )

        @self.realtime.get("/readyz")
        async def realtime_ready() -> JSONResponse:
            return JSONResponse({"ready": True, "checks": {"triton": True}})

        @self.asyncsvc.post("/internal/jobs")
        async def create(request: Request) -> JSONResponse:
            await verified(request, "async_svc")
            self.calls.append(("async", "POST /internal/jobs", await request.json(), dict(request.headers)))
            headers = {"Idempotent-Replayed": "true"} if self.replayed else {}
            return JSONResponse({"id": str(uuid.uuid4()), "status": "queued"}, status_code=202, headers=headers)

        @self.asyncsvc.api_route("/internal/jobs/{job_id}", methods=["GET", "DELETE"])
        async def job(job_id: str, request: Request) -> JSONResponse:
            await verified(request, "async_svc")
            self.calls.append(("async", f"{request.method} /internal/jobs", None, dict(request.headers)))
            if job_id == "00000000-0000-0000-0000-000000000000":
                doc = {"type": type_uri("not-found"), "title": "Not found", "status": 404}
                return JSONResponse(doc, status_code=404, media_type=PROBLEM_JSON)
            status = "cancelling" if request.method == "DELETE" else "running"
            return JSONResponse({"id": job_id, "status": status, "tenant_seen": self.tenants[-1]})

        @self.asyncsvc.get("/readyz")
        async def async_ready() -> JSONResponse:
            ok = self.async_ready
            return JSONResponse({"ready": ok, "checks": {}}, status_code=200 if ok else 503)


STREAM_EVENTS = [
    b'event: token\r\ndata: {"text": "short"}\r\n\r\n',
    b'event: token\r\ndata: {"text": "."}\r\n\r\n',
    b'event: summary\r\ndata: {"id": "r", "mode": "realtime", "summary": "short.", "model": "fake", '
    b'"usage": {"input_tokens": 5, "output_tokens": 2}, "timings": {}}\r\n\r\n',
]


class HttpxStream:
    """UpstreamStream's interface over an httpx streamed response."""

    def __init__(self, r: httpx.Response) -> None:
        self.r = r
        self.closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self.r.aiter_raw():
            yield chunk

    async def close(self) -> None:
        self.closed = True
        await self.r.aclose()


class ASGIUpstream:
    """The gateway's UpstreamClient over in-process ASGI apps (one httpx client per base URL)."""

    def __init__(self, apps: dict[str, FastAPI]) -> None:
        self.clients = {
            base: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base) for base, app in apps.items()
        }
        self.fail: type[Exception] | None = None
        self.streams: list[HttpxStream] = []

    async def call(
        self,
        method: str,
        url: str,
        *,
        timeout_s: float,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        retry_disconnect: bool = False,
    ) -> Upstream:
        if self.fail is not None:
            raise self.fail(url)
        base = next(b for b in self.clients if url.startswith(b))
        hdrs = dict(headers or {})
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        r = await self.clients[base].request(method, url, content=body, headers=hdrs)
        return Upstream(r.status_code, r.content, r.headers)

    async def open_stream(
        self, method: str, url: str, *, timeout_s: float, body: bytes, headers: dict[str, str]
    ) -> Upstream | HttpxStream:
        if self.fail is not None:
            raise self.fail(url)
        client = self.clients[next(b for b in self.clients if url.startswith(b))]
        hdrs = {**headers, "Content-Type": "application/json", "Accept": SSE}
        r = await client.send(client.build_request(method, url, content=body, headers=hdrs), stream=True)
        if r.status_code == 200 and r.headers["content-type"].startswith(SSE):
            self.streams.append(HttpxStream(r))
            return self.streams[-1]
        await r.aread()
        await r.aclose()
        return Upstream(r.status_code, r.content, r.headers)

    async def aclose(self) -> None:
        for c in self.clients.values():
            await c.aclose()


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def settings(**extra: Any) -> GatewaySettings:
    base: dict[str, Any] = {
        "env": "test",
        "api_keys": SecretStr(json.dumps({hash_key(KEY): "acme"})),
        "dev_api_key": SecretStr(""),
        "realtime_url": REALTIME,
        "async_url": ASYNC,
        "max_request_bytes": LIMIT,
        "routing_threshold_tokens": THRESHOLD,
        "public_base_url": None,
    }
    base.update(extra)
    return GatewaySettings(**base)


class Gateway:
    def __init__(self, client: httpx.AsyncClient, fakes: FakeUpstreams, upstream: ASGIUpstream, state: State):
        self.client = client
        self.fakes = fakes
        self.upstream = upstream
        self.state = state


async def make_gateway(counter: TokenCounter, **extra: Any) -> Gateway:
    fakes = FakeUpstreams()
    upstream = ASGIUpstream({REALTIME: fakes.realtime, ASYNC: fakes.asyncsvc})
    state = State(settings(**extra), upstream, counter)
    return Gateway(gateway_client(state), fakes, upstream, state)


def gateway_client(state: State) -> httpx.AsyncClient:
    """A client of the gateway app in process, ``state`` handed in through its dependency (no
    lifespan: the caller owns the state's clients)."""
    app = create_app()

    async def test_state() -> State:
        return state

    app.dependency_overrides[get_state] = test_state
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test")


@pytest.fixture
async def gw(counter: TokenCounter) -> AsyncIterator[Gateway]:
    g = await make_gateway(counter)
    yield g
    await g.client.aclose()
    await g.upstream.aclose()


def routed(mode: str, reason: str) -> float:
    return REGISTRY.get_sample_value("precis_gateway_routed_total", {"mode": mode, "reason": reason}) or 0.0


async def post(gw: Gateway, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return await gw.client.post("/v1/summaries", json=body, headers={**AUTH, **(headers or {})})


# ---- content type, size, validation --------------------------------------------------------


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type_is_415(gw: Gateway, ctype: str | None) -> None:
    headers = dict(AUTH)
    if ctype:
        headers["Content-Type"] = ctype
    r = await gw.client.post("/v1/summaries", content=json.dumps({"text": SHORT}).encode(), headers=headers)
    doc = assert_problem(r, 415, "unsupported-media-type")
    assert "application/json" in doc["detail"]
    assert gw.fakes.calls == []


async def test_json_content_type_with_charset_is_accepted(gw: Gateway) -> None:
    r = await gw.client.post(
        "/v1/summaries",
        content=json.dumps({"text": SHORT}).encode(),
        headers={**AUTH, "Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert r.status_code == 200, r.text


async def test_declared_body_over_the_limit_is_413_naming_the_limit(gw: Gateway) -> None:
    r = await post(gw, {"text": "x" * (LIMIT + 10)})
    doc = assert_problem(r, 413, "request-too-large")
    assert doc["limit_bytes"] == LIMIT
    assert f"the limit is {LIMIT} bytes" in doc["detail"]
    assert gw.fakes.calls == []


async def test_streamed_body_over_the_limit_is_413(gw: Gateway) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    r = await gw.client.post("/v1/summaries", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    doc = assert_problem(r, 413, "request-too-large")
    assert doc["limit_bytes"] == LIMIT
    assert f"exceeds the limit of {LIMIT} bytes" in doc["detail"]


async def test_text_over_the_text_limit_is_413_text_too_large(counter: TokenCounter) -> None:
    from common.schemas import MAX_TEXT_BYTES

    g = await make_gateway(counter, max_request_bytes=MAX_TEXT_BYTES + 65536)
    try:
        r = await post(g, {"text": "a" * (MAX_TEXT_BYTES + 1)})
        doc = assert_problem(r, 413, "text-too-large")
        assert doc["limit_bytes"] == MAX_TEXT_BYTES
        assert doc["size_bytes"] == MAX_TEXT_BYTES + 1
        assert g.fakes.calls == []
    finally:
        await g.client.aclose()
        await g.upstream.aclose()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "text"),
        ({"text": "   "}, "text"),
        ({"text": SHORT, "colour": "blue"}, "colour"),
        ({"text": SHORT, "language": "English!"}, "language"),
        ({"text": SHORT, "mode": "fast"}, "mode"),
        ({"text": SHORT, "max_summary_tokens": 0}, "max_summary_tokens"),
    ],
)
async def test_invalid_body_is_422_naming_the_field(gw: Gateway, body: dict[str, Any], field: str) -> None:
    doc = assert_problem(await post(gw, body), 422, "validation-error")
    assert [e["field"] for e in doc["errors"]] == [field]
    assert doc["detail"].startswith(f"{field}: ")
    assert gw.fakes.calls == []


async def test_malformed_json_is_422(gw: Gateway) -> None:
    r = await gw.client.post(
        "/v1/summaries", content=b'{"text": ', headers={**AUTH, "Content-Type": "application/json"}
    )
    doc = assert_problem(r, 422, "validation-error")
    assert doc["errors"][0]["type"] == "json_invalid"


async def test_notify_on_a_realtime_summary_is_422(gw: Gateway) -> None:
    before = routed("realtime", "explicit")
    r = await post(gw, {"text": SHORT, "mode": "realtime", "notify": {"webhook_url": "https://example.com/h"}})
    doc = assert_problem(r, 422, "validation-error")
    assert doc["detail"] == "notify: only async summaries send notifications"
    assert gw.fakes.calls == []
    assert routed("realtime", "explicit") == before + 1  # counted as routed, as before the split


@pytest.mark.parametrize(
    "key",
    ["k" * 256, "", "café".encode(), "tab\there"],
    ids=["256 chars", "empty", "non-ASCII", "control character"],
)
async def test_an_idempotency_key_out_of_its_rules_is_422(gw: Gateway, key: str | bytes) -> None:
    # an empty or non-ASCII key used to be forwarded, then refused by async_svc for a token signed
    # for another key (schemathesis found it): a clear 422 now, and no hop
    r = await gw.client.post("/v1/summaries", json={"text": LONG}, headers=[*AUTH.items(), ("Idempotency-Key", key)])
    doc = assert_problem(r, 422, "validation-error")
    assert "Idempotency-Key" in doc["detail"]
    assert gw.fakes.calls == []


async def test_an_idempotency_key_with_inner_spaces_and_symbols_is_forwarded_as_is(gw: Gateway) -> None:
    key = "order 42/#a~b"
    assert (await post(gw, {"text": LONG}, {"Idempotency-Key": key})).status_code == 202
    assert gw.fakes.calls[-1][3]["idempotency-key"] == key


# ---- auth and rate limit ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "send 'Authorization: Bearer <api key>'"),
        ({"Authorization": f"Basic {KEY}"}, "send 'Authorization: Bearer <api key>'"),
        ({"Authorization": "Bearer not-a-key"}, "the API key is not recognised"),
    ],
)
async def test_missing_or_unknown_key_is_401(gw: Gateway, headers: dict[str, str], detail: str) -> None:
    r = await gw.client.post("/v1/summaries", json={"text": SHORT}, headers=headers)
    doc = assert_problem(r, 401, "unauthorized")
    assert doc["detail"] == detail
    assert r.headers["www-authenticate"] == "Bearer"
    r = await gw.client.get(f"/v1/summaries/{uuid.uuid4()}", headers=headers)
    assert_problem(r, 401, "unauthorized")
    assert gw.fakes.calls == []


async def test_auth_comes_before_content_type_and_size(gw: Gateway) -> None:
    r = await gw.client.post("/v1/summaries", content=b"x" * (LIMIT * 2), headers={"Content-Type": "text/plain"})
    assert_problem(r, 401, "unauthorized")


async def test_over_the_tenant_rate_is_429_with_ratelimit_headers(counter: TokenCounter) -> None:
    g = await make_gateway(counter, rate_limit_per_minute=2)
    try:
        r = await post(g, {"text": SHORT})
        assert r.status_code == 200
        assert (r.headers["ratelimit-limit"], r.headers["ratelimit-remaining"]) == ("2", "1")
        assert int(r.headers["ratelimit-reset"]) <= 60
        assert (await post(g, {"text": SHORT})).headers["ratelimit-remaining"] == "0"
        r = await post(g, {"text": SHORT})
        doc = assert_problem(r, 429, "rate-limited")
        assert (doc["limit"], doc["limit_value"], doc["window_s"]) == ("requests", 2, 60)
        assert "limit of 2 requests per minute" in doc["detail"]
        assert r.headers["ratelimit-limit"] == "2" and r.headers["ratelimit-remaining"] == "0"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert r.headers["retry-after"] == r.headers["ratelimit-reset"]
    finally:
        await g.client.aclose()
        await g.upstream.aclose()


# ---- routing -------------------------------------------------------------------------------


async def test_auto_short_text_goes_realtime_and_the_summary_is_relayed(gw: Gateway) -> None:
    before = routed("realtime", "threshold")
    r = await post(gw, {"text": SHORT, "language": "en"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["summary"] == "short."
    [(svc, call, payload, _)] = gw.fakes.calls
    assert (svc, call) == ("realtime", "POST /internal/summarize")
    assert payload is not None
    assert payload["text"] == SHORT and payload["language"] == "en"
    assert payload["max_summary_tokens"] == 128  # DEFAULT_REALTIME_SUMMARY_TOKENS
    assert r.json()["id"] == payload["request_id"]
    assert routed("realtime", "threshold") == before + 1


async def test_auto_long_text_goes_async_with_tenant_and_idempotency_key(gw: Gateway) -> None:
    before = routed("async", "threshold")
    r = await post(gw, {"text": LONG, "metadata": {"ref": 7}}, {"Idempotency-Key": "abc"})
    assert r.status_code == 202, r.text
    doc = r.json()
    assert doc["status"] == "queued"
    # no public base URL and a non-loopback Host: relative (issue #14 item 5)
    assert doc["status_url"] == f"/v1/summaries/{doc['id']}"
    assert r.headers["location"] == doc["status_url"]
    assert "idempotent-replayed" not in r.headers
    [(svc, call, payload, headers)] = gw.fakes.calls
    assert (svc, call) == ("async", "POST /internal/jobs")
    assert payload == {
        "text": LONG,
        "max_summary_tokens": None,
        "language": "auto",
        "notify": None,
        "metadata": {"ref": 7},
    }
    assert gw.fakes.tenants == ["acme"]  # from the signed token, not a bare header
    assert "x-precis-tenant" not in headers
    assert headers["idempotency-key"] == "abc"
    assert routed("async", "threshold") == before + 1


async def test_explicit_mode_overrides_the_length(gw: Gateway) -> None:
    rt, asy = routed("realtime", "explicit"), routed("async", "explicit")
    assert (await post(gw, {"text": SHORT, "mode": "async"})).status_code == 202
    assert (await post(gw, {"text": LONG, "mode": "realtime"})).status_code == 200
    assert [c[0] for c in gw.fakes.calls] == ["async", "realtime"]
    assert routed("realtime", "explicit") == rt + 1
    assert routed("async", "explicit") == asy + 1


async def test_async_replay_and_public_base_url(counter: TokenCounter) -> None:
    g = await make_gateway(counter, public_base_url="https://api.example.com/")
    g.fakes.replayed = True
    try:
        r = await post(g, {"text": SHORT, "mode": "async"}, {"Idempotency-Key": "abc"})
        assert r.status_code == 202
        assert r.headers["idempotent-replayed"] == "true"
        assert r.json()["status_url"].startswith("https://api.example.com/v1/summaries/")
    finally:
        await g.client.aclose()
        await g.upstream.aclose()


async def test_notify_is_forwarded_to_async(gw: Gateway) -> None:
    r = await post(gw, {"text": SHORT, "mode": "async", "notify": {"webhook_url": "https://example.com/h"}})
    assert r.status_code == 202, r.text
    payload = gw.fakes.calls[0][2]
    assert payload is not None and payload["notify"] == {"webhook_url": "https://example.com/h"}


# ---- upstream answers and failures -----------------------------------------------------------


async def test_upstream_problem_is_relayed_as_is(gw: Gateway) -> None:
    doc = {"type": "https://precis.dev/problems/model-overloaded", "title": "x", "status": 503, "detail": "busy"}
    gw.fakes.realtime_answer = (503, doc, {"Retry-After": "3", "X-Internal": "no"})
    r = await post(gw, {"text": SHORT})
    assert r.status_code == 503
    assert r.json() == doc
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    assert r.headers["retry-after"] == "3"
    assert "x-internal" not in r.headers


async def test_a_relayed_problem_names_the_public_path_never_an_internal_one(gw: Gateway) -> None:
    # issue #14 item 9: internal routes (/internal/...) were relayed in the problem's instance
    doc = {
        "type": "https://precis.dev/problems/model-overloaded",
        "title": "x",
        "status": 503,
        "detail": "busy",
        "instance": "/internal/summarize",
    }
    gw.fakes.realtime_answer = (503, doc, {"Retry-After": "3"})
    r = await post(gw, {"text": SHORT})
    assert r.status_code == 503
    assert r.json() == {**doc, "instance": "/v1/summaries"}
    assert "/internal" not in r.text


@pytest.mark.parametrize(
    ("fail", "body", "status", "type_"),
    [
        (UpstreamDown, {"text": SHORT}, 503, "upstream-unavailable"),
        (UpstreamTimeout, {"text": SHORT}, 504, "upstream-timeout"),
        (UpstreamDown, {"text": LONG}, 503, "upstream-unavailable"),
        (UpstreamTimeout, {"text": LONG}, 503, "upstream-unavailable"),  # unknown outcome: retry with the key
    ],
)
async def test_upstream_failures(gw: Gateway, fail: type[Exception], body: dict, status: int, type_: str) -> None:
    gw.upstream.fail = fail
    r = await post(gw, body)
    doc = assert_problem(r, status, type_)
    if status == 503:
        assert r.headers["retry-after"] == "2"
    else:
        assert doc["detail"] == "no summary within 35 s"


# ---- the internal token (issue #14 item 7) ----------------------------------------------------


async def test_every_hop_carries_a_token_the_services_verify(gw: Gateway) -> None:
    assert (await post(gw, {"text": SHORT})).status_code == 200
    assert (await post(gw, {"text": LONG}, {"Idempotency-Key": "k9"})).status_code == 202
    job_id = str(uuid.uuid4())
    assert (await gw.client.get(f"/v1/summaries/{job_id}", headers=AUTH)).status_code == 200
    assert (await gw.client.delete(f"/v1/summaries/{job_id}", headers=AUTH)).status_code == 200
    assert gw.fakes.tenants == ["acme"] * 4
    assert all(c[3]["authorization"].startswith("Bearer ") for c in gw.fakes.calls)


async def test_a_refused_internal_token_is_502_not_the_clients_401(counter: TokenCounter) -> None:
    """A secret that differs between the pods: the client's API key is fine, so it must not read
    401 (and no internal detail reaches it)."""
    g = await make_gateway(counter, internal_token_secret=SecretStr("another-secret-than-the-services-have-0001"))
    try:
        for r in (await post(g, {"text": SHORT}), await post(g, {"text": LONG})):
            doc = assert_problem(r, 502, "upstream-refused")
            assert doc["instance"] == "/v1/summaries"
            assert doc["detail"] == "an internal service refused the call; retry later"
        assert g.fakes.tenants == []
    finally:
        await g.client.aclose()
        await g.upstream.aclose()


async def test_rotation_the_gateway_signs_with_the_first_key(counter: TokenCounter) -> None:
    new = "the-new-internal-secret-after-rotation-01"
    g = await make_gateway(counter, internal_token_secret=SecretStr(f"{new},{DEV_INTERNAL_TOKEN_SECRET}"))
    try:
        g.fakes.keys = [new]  # services that already dropped the old key still accept the gateway
        assert (await post(g, {"text": SHORT})).status_code == 200
        g.fakes.keys = [DEV_INTERNAL_TOKEN_SECRET]  # and ones that do not know the new one yet refuse
        assert_problem(await post(g, {"text": SHORT}), 502, "upstream-refused")
    finally:
        await g.client.aclose()
        await g.upstream.aclose()


# ---- job reads and cancels -------------------------------------------------------------------


async def test_job_read_and_cancel_are_proxied_with_the_tenant(gw: Gateway) -> None:
    job_id = str(uuid.uuid4())
    r = await gw.client.get(f"/v1/summaries/{job_id}", headers=AUTH)
    assert r.status_code == 200
    assert r.json() == {"id": job_id, "status": "running", "tenant_seen": "acme"}
    r = await gw.client.delete(f"/v1/summaries/{job_id}", headers=AUTH)
    assert r.json()["status"] == "cancelling"
    assert [c[1] for c in gw.fakes.calls] == ["GET /internal/jobs", "DELETE /internal/jobs"]


async def test_job_id_that_is_not_a_uuid_is_404_without_a_hop(gw: Gateway) -> None:
    doc = assert_problem(await gw.client.get("/v1/summaries/nope", headers=AUTH), 404, "not-found")
    assert doc["detail"] == "no summary job with this id"
    assert gw.fakes.calls == []


async def test_unknown_job_404_is_relayed(gw: Gateway) -> None:
    r = await gw.client.get("/v1/summaries/00000000-0000-0000-0000-000000000000", headers=AUTH)
    assert_problem(r, 404, "not-found")


async def test_unknown_route_and_method_are_problems(gw: Gateway) -> None:
    assert_problem(await gw.client.get("/v2/nothing"), 404, "not-found")
    assert_problem(await gw.client.put("/v1/summaries", headers=AUTH), 405, "method-not-allowed")


# ---- health --------------------------------------------------------------------------------


async def test_healthz_and_readyz(gw: Gateway) -> None:
    r = await gw.client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    r = await gw.client.get("/readyz")
    limits = {"storage": "memory", "scope": "per-replica", "store_reachable": True, "on_store_failure": "open"}
    assert (r.status_code, r.json()) == (
        200,
        {"ready": True, "checks": {"realtime_svc": True, "async_svc": True}, "rate_limits": limits},
    )
    gw.fakes.async_ready = False
    r = await gw.client.get("/readyz")
    assert (r.status_code, r.json()) == (
        503,
        {"ready": False, "checks": {"realtime_svc": True, "async_svc": False}, "rate_limits": limits},
    )
    gw.upstream.fail = UpstreamDown
    r = await gw.client.get("/readyz")
    assert (r.status_code, r.json()["checks"]) == (503, {"realtime_svc": False, "async_svc": False})


# ---- host-safe links (issue #14 item 5) --------------------------------------------------------


async def test_an_unexpected_host_header_never_appears_in_links(gw: Gateway) -> None:
    r = await post(gw, {"text": SHORT, "mode": "async"}, {"Host": "evil.example"})
    assert r.status_code == 202, r.text
    assert "evil.example" not in r.text and "evil.example" not in r.headers["location"]
    assert r.json()["status_url"] == r.headers["location"] == f"/v1/summaries/{r.json()['id']}"


async def test_a_loopback_host_gets_an_absolute_link_for_local_runs(gw: Gateway) -> None:
    r = await post(gw, {"text": SHORT, "mode": "async"}, {"Host": "127.0.0.1:8080"})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"http://127.0.0.1:8080/v1/summaries/{r.json()['id']}"


async def test_the_public_base_url_wins_over_any_host_header(counter: TokenCounter) -> None:
    g = await make_gateway(counter, public_base_url="https://api.example.com")
    try:
        r = await post(g, {"text": SHORT, "mode": "async"}, {"Host": "evil.example"})
        assert r.status_code == 202
        assert r.headers["location"] == f"https://api.example.com/v1/summaries/{r.json()['id']}"
        assert "evil.example" not in r.text
    finally:
        await g.client.aclose()
        await g.upstream.aclose()


async def test_a_webhook_to_a_private_address_is_refused_at_submit(gw: Gateway) -> None:
    r = await post(gw, {"text": SHORT, "mode": "async", "notify": {"webhook_url": "http://169.254.169.254/latest"}})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "cloud metadata endpoint" in r.json()["detail"]
    assert gw.fakes.calls == []


async def test_an_unknown_query_parameter_is_422_naming_it(gw: Gateway) -> None:
    # ?dryrun=true (a typo of dry_run) used to be ignored, and the request made a real job
    r = await gw.client.post("/v1/summaries?dryrun=true", json={"text": LONG}, headers=AUTH)
    doc = assert_problem(r, 422, "validation-error")
    assert "dryrun" in doc["detail"] and "dry_run" in doc["detail"]
    assert gw.fakes.calls == []


# ---- streamed summaries (stream: true / Accept: text/event-stream) ---------------------------


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"text": SHORT, "stream": True}, {}),
        ({"text": SHORT}, {"Accept": "text/event-stream"}),
        ({"text": SHORT, "mode": "realtime", "stream": True}, {}),
        # mode=auto streams realtime whatever the length: no job, no spill-over
        ({"text": LONG, "stream": True}, {}),
    ],
    ids=["flag", "accept", "realtime", "long-auto"],
)
async def test_a_stream_is_relayed_from_realtime(gw: Gateway, body: dict[str, Any], headers: dict[str, str]) -> None:
    r = await post(gw, body, headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    assert r.content == b"".join(STREAM_EVENTS)  # byte for byte
    assert [(svc, sent["stream"]) for svc, _, sent, _ in gw.fakes.calls] == [("realtime", True)]
    assert gw.upstream.streams and all(s.closed for s in gw.upstream.streams)


@pytest.mark.parametrize("accept", ["*/*", "application/json", "application/json, text/event-stream"])
async def test_other_accept_headers_keep_the_json_answer(gw: Gateway, accept: str) -> None:
    r = await post(gw, {"text": SHORT}, {"Accept": accept})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert gw.fakes.calls[0][2].get("stream") is None


async def test_an_async_stream_is_422(gw: Gateway) -> None:
    r = await post(gw, {"text": LONG, "mode": "async", "stream": True})
    doc = assert_problem(r, 422, "validation-error")
    assert "stream" in doc["detail"] and "mode=async" in doc["detail"]
    assert gw.fakes.calls == []


async def test_a_problem_before_the_stream_is_relayed(gw: Gateway) -> None:
    gw.fakes.realtime_answer = (
        503,
        {"type": type_uri("model-overloaded"), "title": "Summarization model overloaded", "status": 503},
        {"Retry-After": "2"},
    )
    r = await post(gw, {"text": SHORT, "stream": True})
    assert_problem(r, 503, "model-overloaded")
    assert r.headers["retry-after"] == "2"


@pytest.mark.parametrize(("failure", "status"), [(UpstreamTimeout, 504), (UpstreamDown, 503)])
async def test_an_unreachable_stream_is_a_problem(gw: Gateway, failure: type[Exception], status: int) -> None:
    gw.upstream.fail = failure
    r = await post(gw, {"text": SHORT, "stream": True})
    assert_problem(r, status, "upstream-timeout" if status == 504 else "upstream-unavailable")
