"""Overload spill-over (issue #11 item 4) in process: a ``mode=auto`` text short enough for realtime
that realtime refuses before starting becomes an async job (202 + Location, ``route_reason:
spilled_over`` and ``spill_reason``, ``precis_gateway_spillover_total{reason}``); ``mode=realtime``
keeps its 503 + Retry-After; ``mode=async`` is unaffected; a realtime answer that is not a refusal
before the start (a timeout, a model error) is never spilled.

Three layers, all httpx.ASGITransport:
- the gateway against the scripted fakes of tests/unit/test_gateway_inprocess.py (each reason,
  what is sent and relayed, the metrics);
- realtime_svc's refusals (realtime_svc/load.py's wait estimate, the in-flight cap, Triton's full
  queue) with the scripted Triton of tests/unit/test_realtime_inprocess.py;
- the gateway over the real realtime_svc app (cap 1, its one slot held by a gated Triton call) and
  the real async_svc app on a migrated SQLite store: one job per spilled request and key.
The same against real processes and a real Triton: tests/e2e/test_spillover.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from async_svc.app import create_app as create_async_app
from async_svc.config import AsyncSettings
from async_svc.deps import State as AsyncState
from async_svc.intake import GroupCommitter
from common.appstate import set_state
from common.internal_auth import InternalTokenAuth
from common.migrate import upgrade
from common.outbox import OutboxRelay
from common.schemas import MAX_WAIT_HEADER, REFUSED_BEFORE_START_HEADER, SpillReason
from common.settings import DEV_INTERNAL_TOKEN_SECRET
from common.store import Database, Job
from common.tokenization import TokenCounter
from common.triton_client import TritonFailure
from gateway.deps import State as GatewayState
from gateway.upstream import UpstreamTimeout
from realtime_svc.app import create_app as create_realtime_app
from realtime_svc.config import RealtimeSettings
from realtime_svc.deps import State as RealtimeState
from realtime_svc.load import ServiceTime
from tests.asserts import assert_problem
from tests.unit.test_gateway_inprocess import (
    ASYNC,
    AUTH,
    LONG,
    REALTIME,
    SHORT,
    ASGIUpstream,
    Gateway,
    gateway_client,
    make_gateway,
    post,
    routed,
    settings,
)
from tests.unit.test_realtime_inprocess import ScriptedTriton

OVERLOADED = {
    "type": "/problems/model-overloaded",
    "title": "Summarization model overloaded",
    "status": 503,
    "detail": "more than 64 summaries in flight; retry shortly",
    "instance": "/internal/summarize",
}


def spilled(reason: str) -> float:
    return REGISTRY.get_sample_value("precis_gateway_spillover_total", {"reason": reason}) or 0.0


def refused_by_realtime(reason: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """realtime_svc's 503, naming a refusal before the start when ``reason`` is set."""
    headers = {"Retry-After": "1"}
    if reason is not None:
        headers[REFUSED_BEFORE_START_HEADER] = reason
    return 503, OVERLOADED, headers


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


@pytest.fixture
async def gw(counter: TokenCounter) -> AsyncIterator[Gateway]:
    g = await make_gateway(counter)
    yield g
    await g.client.aclose()
    await g.upstream.aclose()


# ---- the gateway's decision (fake upstreams) -----------------------------------------------


@pytest.mark.parametrize("reason", [r.value for r in SpillReason])
async def test_auto_refused_before_start_becomes_a_job(gw: Gateway, reason: str) -> None:
    gw.fakes.realtime_answer = refused_by_realtime(reason)
    before, routed_before, rt_before = spilled(reason), routed("async", "spilled_over"), routed("realtime", "threshold")
    r = await post(gw, {"text": SHORT, "metadata": {"ref": 1}}, {"Idempotency-Key": "spill-1"})
    assert r.status_code == 202, r.text
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    # exactly an async job's 202, plus why
    assert doc == {
        "id": doc["id"],
        "mode": "async",
        "status": "queued",
        "status_url": f"/v1/summaries/{doc['id']}",
        "route_reason": "spilled_over",
        "spill_reason": reason,
    }
    assert r.headers["location"] == doc["status_url"]
    assert REFUSED_BEFORE_START_HEADER.lower() not in r.headers  # internal, never relayed
    (rt, _, _, rt_headers), (asy, call, payload, headers) = gw.fakes.calls
    assert rt == "realtime" and rt_headers[MAX_WAIT_HEADER.lower()] == "5000"  # the default bound, 5 s
    assert (asy, call) == ("async", "POST /internal/jobs")
    # what a mode=async submit of the same body sends: a retry with the key replays this job
    assert payload == {
        "text": SHORT,
        "max_summary_tokens": None,
        "language": "auto",
        "notify": None,
        "metadata": {"ref": 1},
    }
    assert headers["idempotency-key"] == "spill-1"
    assert spilled(reason) == before + 1
    assert routed("async", "spilled_over") == routed_before + 1
    assert routed("realtime", "threshold") == rt_before  # counted once, by the path it took


@pytest.mark.parametrize("reason", [r.value for r in SpillReason])
async def test_mode_realtime_keeps_its_503_with_retry_after(gw: Gateway, reason: str) -> None:
    gw.fakes.realtime_answer = refused_by_realtime(reason)
    before = spilled(reason)
    r = await post(gw, {"text": SHORT, "mode": "realtime"})
    doc = assert_problem(r, 503, "model-overloaded")
    assert r.headers["retry-after"] == "1"
    assert doc["instance"] == "/v1/summaries"  # not the internal path
    assert REFUSED_BEFORE_START_HEADER.lower() not in r.headers
    [(svc, _, _, headers)] = gw.fakes.calls
    assert svc == "realtime" and MAX_WAIT_HEADER.lower() not in headers  # never asked to refuse early
    assert spilled(reason) == before


async def test_mode_async_is_unaffected(gw: Gateway) -> None:
    gw.fakes.realtime_answer = refused_by_realtime("realtime_at_capacity")
    r = await post(gw, {"text": SHORT, "mode": "async"})
    assert r.status_code == 202
    assert (r.json()["route_reason"], r.json()["spill_reason"]) == ("explicit", None)
    assert [c[0] for c in gw.fakes.calls] == ["async"]  # realtime not asked


async def test_auto_long_text_says_threshold(gw: Gateway) -> None:
    r = await post(gw, {"text": LONG})
    assert r.status_code == 202
    assert (r.json()["route_reason"], r.json()["spill_reason"]) == ("threshold", None)


async def test_auto_served_by_realtime_is_a_summary_and_counted_realtime(gw: Gateway) -> None:
    before = routed("realtime", "threshold")
    r = await post(gw, {"text": SHORT})
    assert r.status_code == 200 and r.json()["mode"] == "realtime"
    assert routed("realtime", "threshold") == before + 1


@pytest.mark.parametrize(
    ("answer", "status", "type_"),
    [
        # a 503 without the header: nothing says the work did not start (model unavailable)
        (refused_by_realtime(None), 503, "model-overloaded"),
        # a header this gateway does not know (a newer realtime_svc): not spilled
        (refused_by_realtime("something_new"), 503, "model-overloaded"),
        # the header on another status is no refusal
        (
            (504, {**OVERLOADED, "status": 504}, {REFUSED_BEFORE_START_HEADER: "realtime_at_capacity"}),
            504,
            "model-overloaded",
        ),
    ],
    ids=["503 without the header", "unknown reason", "not a 503"],
)
async def test_anything_but_a_refusal_before_start_is_relayed_not_spilled(
    gw: Gateway, answer: tuple[int, dict[str, Any], dict[str, str]], status: int, type_: str
) -> None:
    gw.fakes.realtime_answer = answer
    r = await post(gw, {"text": SHORT}, {"Idempotency-Key": "k"})
    assert_problem(r, status, type_)
    assert [c[0] for c in gw.fakes.calls] == ["realtime"]  # no job


async def test_a_realtime_timeout_is_never_spilled(gw: Gateway) -> None:
    # the summary may be under way: a job as well would do the work twice
    gw.upstream.fail = UpstreamTimeout
    r = await post(gw, {"text": SHORT})
    assert_problem(r, 504, "upstream-timeout")
    gw.upstream.fail = None
    assert gw.fakes.calls == []


async def test_spill_over_off_relays_the_503(counter: TokenCounter) -> None:
    g = await make_gateway(counter, spillover_enabled=False)
    try:
        g.fakes.realtime_answer = refused_by_realtime("realtime_at_capacity")
        r = await post(g, {"text": SHORT})
        assert_problem(r, 503, "model-overloaded")
        [(_, _, _, headers)] = g.fakes.calls
        assert MAX_WAIT_HEADER.lower() not in headers
    finally:
        await g.client.aclose()
        await g.upstream.aclose()


async def test_the_bound_is_a_setting(counter: TokenCounter) -> None:
    g = await make_gateway(counter, spillover_max_wait_s=0.25)
    try:
        assert (await post(g, {"text": SHORT})).status_code == 200
        [(_, _, _, headers)] = g.fakes.calls
        assert headers[MAX_WAIT_HEADER.lower()] == "250"
    finally:
        await g.client.aclose()
        await g.upstream.aclose()


async def test_a_spill_async_cannot_take_is_its_503_to_retry(gw: Gateway) -> None:
    # async_svc unreachable: the client is told to retry (with its key); nothing is lost silently
    gw.fakes.realtime_answer = refused_by_realtime("model_queue_full")
    real_call = gw.upstream.call

    async def call(method: str, url: str, **kw: Any) -> Any:
        if url.startswith(ASYNC):
            from gateway.upstream import UpstreamDown

            raise UpstreamDown(url)
        return await real_call(method, url, **kw)

    gw.upstream.call = call  # type: ignore[method-assign]
    r = await post(gw, {"text": SHORT}, {"Idempotency-Key": "k"})
    doc = assert_problem(r, 503, "upstream-unavailable")
    assert "async" in doc["detail"] and r.headers["retry-after"] == "2"


async def test_the_dry_run_is_not_spilled(gw: Gateway) -> None:
    r = await gw.client.post("/v1/summaries?dry_run=true", json={"text": SHORT}, headers=AUTH)
    assert r.status_code == 200 and r.json()["mode"] == "realtime"
    assert gw.fakes.calls == []


def test_settings_bound_validation() -> None:
    with pytest.raises(ValueError, match="spillover_max_wait_s"):
        settings(spillover_max_wait_s=0)


# ---- realtime_svc's refusals before the start ----------------------------------------------


def test_service_time_is_busy_time_per_completion() -> None:
    t = [100.0]
    st = ServiceTime(alpha=0.5)
    st.now = lambda: t[0]  # type: ignore[method-assign]
    assert st.estimated_wait_s(3) == 0.0  # no sample yet: no estimate, the cap still holds
    st.started(0)
    st.started(1)
    t[0] = 102.0
    st.finished(completed=True)  # 2 s of busy time for the first
    assert st.per_summary_s == 2.0
    t[0] = 102.0
    st.finished(completed=True)  # the same batch: 0 s more
    assert st.per_summary_s == 1.0
    t[0] = 500.0  # idle: not counted
    st.started(0)
    st.started(1)
    t[0] = 501.0
    st.finished(completed=False)  # a failure is no sample, its time goes to the next
    t[0] = 502.0
    st.finished(completed=True)  # 2 s since the busy time began
    assert st.per_summary_s == 1.5
    assert st.estimated_wait_s(4) == 6.0


class Rt:
    def __init__(self, client: httpx.AsyncClient, triton: ScriptedTriton, state: RealtimeState) -> None:
        self.client, self.triton, self.state = client, triton, state


@pytest.fixture
async def rt(counter: TokenCounter) -> AsyncIterator[Rt]:
    s = RealtimeSettings(env="test", realtime_max_input_tokens=64, realtime_deadline_s=5.0, realtime_max_in_flight=2)
    triton = ScriptedTriton()
    state = RealtimeState(s, triton, counter)  # type: ignore[arg-type]  # scripted stand-in
    app = create_realtime_app()
    set_state(app, state)
    auth = InternalTokenAuth(DEV_INTERNAL_TOKEN_SECRET, "acme", "realtime_svc")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rt.test", auth=auth) as c:
        yield Rt(c, triton, state)


async def summarize(rt: Rt, headers: dict[str, str] | None = None) -> httpx.Response:
    return await rt.client.post("/internal/summarize", json={"text": SHORT, "request_id": "r"}, headers=headers)


async def test_over_the_wait_bound_is_refused_before_triton(rt: Rt) -> None:
    rt.state.service_time.per_summary_s = 3.0
    rt.state.in_flight = 1  # one summary ahead: about 3 s of wait
    r = await summarize(rt, {MAX_WAIT_HEADER: "2000"})
    doc = assert_problem(r, 503, "model-overloaded")
    assert r.headers[REFUSED_BEFORE_START_HEADER] == "realtime_wait_too_long"
    assert r.headers["retry-after"] == "1"
    assert doc["detail"] == "the realtime queue is too long now; retry shortly"  # no figures
    assert rt.triton.calls == []
    # within the bound, or without one (mode=realtime): it queues and is served
    assert (await summarize(rt, {MAX_WAIT_HEADER: "4000"})).status_code == 200
    assert (await summarize(rt)).status_code == 200
    assert (await summarize(rt, {MAX_WAIT_HEADER: "not a number"})).status_code == 200
    assert len(rt.triton.calls) == 3


async def test_the_in_flight_cap_names_its_refusal(rt: Rt) -> None:
    rt.state.in_flight = 2
    r = await summarize(rt)
    assert_problem(r, 503, "model-overloaded")
    assert r.headers[REFUSED_BEFORE_START_HEADER] == "realtime_at_capacity"
    assert rt.triton.calls == []


@pytest.mark.parametrize(
    ("script", "header"),
    [
        ([TritonFailure("overloaded", "queue full")], "model_queue_full"),
        ([TritonFailure("unavailable", "a"), TritonFailure("overloaded", "queue full")], "model_queue_full"),
        ([TritonFailure("unavailable", "a"), TritonFailure("unavailable", "b")], None),
        ([TritonFailure("deadline", "late")], None),  # it may have run: never spilled
        ([TritonFailure("internal", "boom")], None),
    ],
    ids=["queue full", "resent, then queue full", "unavailable", "deadline", "internal"],
)
async def test_only_triton_refusals_before_the_start_are_named(
    rt: Rt, script: list[TritonFailure], header: str | None
) -> None:
    rt.triton.script = list(script)
    r = await summarize(rt, {MAX_WAIT_HEADER: "5000"})
    assert r.status_code in (502, 503, 504)
    assert r.headers.get(REFUSED_BEFORE_START_HEADER) == header
    assert rt.state.in_flight == 0


# ---- the gateway over the real realtime_svc and async_svc apps -----------------------------


class Real:
    def __init__(self, gw: httpx.AsyncClient, triton: ScriptedTriton, db: Database, upstream: ASGIUpstream) -> None:
        self.gw, self.triton, self.db, self.upstream = gw, triton, db, upstream

    async def jobs(self) -> int:
        async with self.db.session() as s:
            return (await s.execute(select(func.count()).select_from(Job))).scalar_one()


@pytest.fixture
async def real(tmp_path: Path, counter: TokenCounter) -> AsyncIterator[Real]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'precis.db'}"
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    relay = OutboxRelay(db, producer=None)  # type: ignore[arg-type]  # never started: no broker here
    committer = GroupCommitter(db, max_batch=8)
    committer.start()
    asyncsvc = create_async_app()
    set_state(asyncsvc, AsyncState(AsyncSettings(env="test", database_url=url), db, relay, committer))
    triton = ScriptedTriton()
    rs = RealtimeSettings(env="test", realtime_deadline_s=5.0, realtime_max_in_flight=1)
    realtime = create_realtime_app()
    set_state(realtime, RealtimeState(rs, triton, counter))  # type: ignore[arg-type]
    upstream = ASGIUpstream({REALTIME: realtime, ASYNC: asyncsvc})
    state = GatewayState(settings(), upstream, counter)
    gw = gateway_client(state)
    try:
        yield Real(gw, triton, db, upstream)
    finally:
        await gw.aclose()
        await upstream.aclose()
        await committer.stop()
        await db.close()


async def test_a_full_realtime_spills_to_exactly_one_job_per_key(real: Real) -> None:
    real.triton.gate = asyncio.Event()
    held = asyncio.create_task(real.gw.post("/v1/summaries", json={"text": SHORT, "mode": "realtime"}, headers=AUTH))
    # until the one realtime slot is taken, its summary under way (the scripted Triton has no
    # event for a first call; a poll of at most a few ms)
    while not real.triton.calls:  # noqa: ASYNC110
        await asyncio.sleep(0.01)

    body = {"text": SHORT, "metadata": {"ref": "spill"}}
    key = {**AUTH, "Idempotency-Key": "spill-once"}
    first = await real.gw.post("/v1/summaries", json=body, headers=key)
    assert first.status_code == 202, first.text
    assert (first.json()["route_reason"], first.json()["spill_reason"]) == ("spilled_over", "realtime_at_capacity")
    # the client retries (its 202 lost): the same job, replayed
    again = await real.gw.post("/v1/summaries", json=body, headers=key)
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and again.headers["location"] == first.headers["location"]
    # or retries with mode=async: the same job too (what was sent is what an async submit sends)
    forced = await real.gw.post("/v1/summaries", json={**body, "mode": "async"}, headers=key)
    assert forced.json()["id"] == first.json()["id"]
    # the same key for another text is the usual 409
    other = await real.gw.post("/v1/summaries", json={"text": "Another text."}, headers=key)
    assert_problem(other, 409, "idempotency-key-reused")
    # mode=realtime meanwhile: 503 + Retry-After, problem+json
    r = await real.gw.post("/v1/summaries", json={"text": SHORT, "mode": "realtime"}, headers=AUTH)
    assert_problem(r, 503, "model-overloaded")
    assert r.headers["retry-after"] == "1"
    assert REFUSED_BEFORE_START_HEADER.lower() not in r.headers
    assert await real.jobs() == 1
    assert len(real.triton.calls) == 1  # only the summary that had started ever reached the model

    real.triton.gate.set()
    assert (await held).status_code == 200
    # realtime has room again: a retry of the spilled request still gets its job, not a summary too
    late = await real.gw.post("/v1/summaries", json=body, headers=key)
    assert late.status_code == 202 and late.headers["idempotent-replayed"] == "true"
    assert late.json()["id"] == first.json()["id"]
    assert (late.json()["route_reason"], late.json()["spill_reason"]) == ("spilled_over", "realtime_at_capacity")
    # and any other mode=auto short text is a summary, no job
    r = await real.gw.post("/v1/summaries", json={"text": SHORT}, headers={**AUTH, "Idempotency-Key": "fresh"})
    assert r.status_code == 200 and r.json()["mode"] == "realtime"
    assert await real.jobs() == 1
    assert len(real.triton.calls) == 2  # the held summary and this one: the spilled text never


async def test_the_spilled_keys_are_per_tenant_and_survive_a_dead_store(counter: TokenCounter) -> None:
    from limits.errors import StorageError

    from gateway.spilled_keys import SpilledKeys

    g = await make_gateway(counter)
    try:
        keys: SpilledKeys = g.state.spilled_keys
        await keys.remember("acme", "k1", SpillReason.model_queue_full)
        await keys.remember("acme", "k1", SpillReason.realtime_at_capacity)  # set once
        assert await keys.reason("acme", "k1") == SpillReason.model_queue_full
        assert await keys.reason("other", "k1") is None and await keys.reason("acme", "k2") is None

        class DeadStore:
            async def get(self, key: str) -> int:
                raise StorageError(OSError("down"))

            async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
                raise StorageError(OSError("down"))

        dead = SpilledKeys(DeadStore(), 0.5)  # type: ignore[arg-type]
        await dead.remember("acme", "k1", SpillReason.model_queue_full)  # logged, not raised
        assert await dead.reason("acme", "k1") is None  # best effort: realtime may serve the retry
    finally:
        await g.client.aclose()
        await g.upstream.aclose()


async def test_a_keyed_retry_of_a_spill_skips_realtime(gw: Gateway) -> None:
    gw.fakes.realtime_answer = refused_by_realtime("realtime_wait_too_long")
    assert (await post(gw, {"text": SHORT}, {"Idempotency-Key": "again"})).status_code == 202
    gw.fakes.realtime_answer = None  # realtime has room now
    before = spilled("realtime_wait_too_long")
    r = await post(gw, {"text": SHORT}, {"Idempotency-Key": "again"})
    assert r.status_code == 202 and r.json()["spill_reason"] == "realtime_wait_too_long"
    assert [c[0] for c in gw.fakes.calls] == ["realtime", "async", "async"]
    assert spilled("realtime_wait_too_long") == before  # a replay is no new spill
    # without a key, or with another, realtime is asked as usual
    assert (await post(gw, {"text": SHORT})).status_code == 200
    assert (await post(gw, {"text": SHORT}, {"Idempotency-Key": "new"})).status_code == 200
