"""realtime_svc driven in process (httpx.ASGITransport, no port, no lifespan): input validation and
the realtime token limit, load shedding, how each Triton failure kind becomes a problem, the one
resend on an unavailable model, readiness.

Unit layer: the Triton client is a scripted stand-in, so each failure kind can be produced on
demand. The same paths against a real Triton are tests/realtime/ (overload, model unloaded)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from common.appstate import set_state
from common.internal_auth import InternalTokenAuth
from common.settings import DEV_INTERNAL_TOKEN_SECRET
from common.tokenization import TokenCounter
from common.triton_client import TritonFailure, TritonResult
from realtime_svc.app import create_app
from realtime_svc.config import RealtimeSettings
from realtime_svc.deps import State
from tests.asserts import assert_problem

MAX_TOKENS = 16
DEADLINE = 5.0
SHORT = "A short sentence."
LONG = " ".join(["The committee met again and discussed the budget at length."] * 10)


class ScriptedTriton:
    """Answers each summarize call from ``script`` (a TritonFailure is raised); records the calls."""

    def __init__(self) -> None:
        self.script: list[TritonResult | TritonFailure] = []
        self.calls: list[dict[str, Any]] = []
        self.is_ready = True
        self.gate: asyncio.Event | None = None  # when set: calls wait for it
        self.both_in = asyncio.Event()  # set once two calls are inside

    async def summarize(
        self, text: str, max_tokens: int, language: str = "auto", *, timeout_s: float, request_id: str = ""
    ) -> TritonResult:
        self.calls.append({"text": text, "max_tokens": max_tokens, "timeout_s": timeout_s, "request_id": request_id})
        if len(self.calls) >= 2:
            self.both_in.set()
        if self.gate is not None:
            await self.gate.wait()
        out = self.script.pop(0) if self.script else TritonResult("a summary", 5, 2, "fake-model")
        if isinstance(out, TritonFailure):
            raise out
        return out

    async def ready(self, timeout_s: float = 1.0) -> bool:
        return self.is_ready


class Svc:
    def __init__(self, client: httpx.AsyncClient, triton: ScriptedTriton, state: State) -> None:
        self.client = client
        self.triton = triton
        self.state = state


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


@pytest.fixture
async def svc(counter: TokenCounter) -> AsyncIterator[Svc]:
    settings = RealtimeSettings(
        env="test", realtime_max_input_tokens=MAX_TOKENS, realtime_deadline_s=DEADLINE, realtime_max_in_flight=2
    )
    triton = ScriptedTriton()
    state = State(settings, triton, counter)  # type: ignore[arg-type]  # scripted stand-in
    app = create_app()
    set_state(app, state)
    # signed as the gateway signs (the settings keep the local dev secret); the refusals are
    # tests/security/test_internal_auth.py
    auth = InternalTokenAuth(DEV_INTERNAL_TOKEN_SECRET, "acme", "realtime_svc")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://rt.test", auth=auth
    ) as client:
        yield Svc(client, triton, state)


async def summarize(svc: Svc, text: str = SHORT, **extra: Any) -> httpx.Response:
    return await svc.client.post("/internal/summarize", json={"text": text, "request_id": "r1", **extra})


async def test_a_summary(svc: Svc) -> None:
    r = await summarize(svc, max_summary_tokens=40, language="en")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["id"] == "r1" and doc["mode"] == "realtime" and doc["summary"] == "a summary"
    assert doc["usage"] == {"input_tokens": 5, "output_tokens": 2}
    assert set(doc["timings"]) == {"tokenize_ms", "inference_ms"}
    assert svc.triton.calls == [{"text": SHORT, "max_tokens": 40, "timeout_s": DEADLINE, "request_id": "r1"}]
    assert svc.state.in_flight == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"request_id": "r"}, "text"),
        ({"text": "x"}, "request_id"),
        ({"text": "x", "request_id": "r", "mode": "x"}, "mode"),
    ],
)
async def test_invalid_body_is_422(svc: Svc, body: dict[str, Any], field: str) -> None:
    doc = assert_problem(await svc.client.post("/internal/summarize", json=body), 422, "validation-error")
    assert field in [e["field"] for e in doc["errors"]]
    assert svc.triton.calls == []


async def test_blank_text_is_422(svc: Svc) -> None:
    doc = assert_problem(await summarize(svc, "  \n "), 422, "validation-error")
    assert doc["detail"] == "text: must not be blank"


async def test_text_over_the_token_limit_is_413_naming_both_counts(svc: Svc) -> None:
    doc = assert_problem(await summarize(svc, LONG), 413, "text-too-long-for-realtime")
    assert doc["limit_tokens"] == MAX_TOKENS
    assert doc["input_tokens"] > MAX_TOKENS
    assert f"at most {MAX_TOKENS} tokens" in doc["detail"] and "mode=async" in doc["detail"]
    assert svc.triton.calls == []


async def test_over_the_in_flight_limit_is_shed_with_503(svc: Svc) -> None:
    svc.triton.gate = asyncio.Event()
    held = [asyncio.create_task(summarize(svc)) for _ in range(2)]
    await asyncio.wait_for(svc.triton.both_in.wait(), 10)
    assert svc.state.in_flight == 2
    r = await summarize(svc)
    doc = assert_problem(r, 503, "model-overloaded")
    assert "more than 2 summaries in flight" in doc["detail"]
    assert r.headers["retry-after"] == "1"
    svc.triton.gate.set()
    assert [t.status_code for t in await asyncio.gather(*held)] == [200, 200]
    assert svc.state.in_flight == 0


@pytest.mark.parametrize(
    ("kind", "status", "type_"),
    [
        ("overloaded", 503, "model-overloaded"),
        ("deadline", 504, "model-deadline"),
        ("invalid", 422, "invalid-model-input"),
        ("internal", 502, "model-error"),
    ],
)
async def test_triton_failures_become_problems_without_a_resend(svc: Svc, kind: str, status: int, type_: str) -> None:
    svc.triton.script = [TritonFailure(kind, f"{kind} happened")]
    r = await summarize(svc)
    assert_problem(r, status, type_)
    assert len(svc.triton.calls) == 1
    if status == 503:
        assert r.headers["retry-after"] == "1"
    assert svc.state.in_flight == 0


async def test_unavailable_is_resent_once_with_the_deadline_left(svc: Svc) -> None:
    svc.triton.script = [TritonFailure("unavailable", "no model")]
    r = await summarize(svc)
    assert r.status_code == 200, r.text
    first, second = svc.triton.calls
    assert first["timeout_s"] == DEADLINE
    assert second["timeout_s"] < DEADLINE - 0.2 + 1e-6  # the first try and the 0.2 s pause are spent
    assert second["request_id"] == "r1"


async def test_unavailable_twice_is_503(svc: Svc) -> None:
    svc.triton.script = [TritonFailure("unavailable", "no model"), TritonFailure("unavailable", "still none")]
    r = await summarize(svc)
    doc = assert_problem(r, 503, "model-unavailable")
    assert doc["detail"] == "the summarization model cannot take this request now; retry shortly"
    assert len(svc.triton.calls) == 2
    assert svc.state.in_flight == 0


async def test_healthz_and_readyz(svc: Svc) -> None:
    r = await svc.client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    r = await svc.client.get("/readyz")
    assert (r.status_code, r.json()) == (200, {"ready": True, "checks": {"triton": True}})
    svc.triton.is_ready = False
    r = await svc.client.get("/readyz")
    assert (r.status_code, r.json()) == (503, {"ready": False, "checks": {"triton": False}})
