"""realtime_svc's refusals before any generation starts, against the real Triton (tests/realtime/
conftest.py: a queue of 1): the 503s the gateway may turn into async jobs (overload spill-over)
name their reason in ``Precis-Refused-Before-Start``: Triton's full queue (``model_queue_full``)
and, for a request carrying ``Precis-Max-Wait-Ms``, an estimated wait over it
(``realtime_wait_too_long``: in flight × the EWMA of busy time per summary, realtime_svc/load.py).
The in-flight cap's refusal is tests/e2e/test_spillover.py's (a stack with a cap of 1)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import httpx
import pytest

from common.schemas import MAX_WAIT_HEADER, REFUSED_BEFORE_START_HEADER
from tests.realtime.conftest import AUTH

pytestmark = pytest.mark.integration

EN = (
    "The city council voted on Tuesday to extend the bike lane network by 40 kilometres over three "
    "years. Officials said cycling has risen by a quarter since 2020."
)


def body(max_tokens: int = 24) -> dict:
    return {"text": EN, "max_summary_tokens": max_tokens, "request_id": uuid.uuid4().hex}


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m[1]) if m else 0.0


async def test_a_full_triton_queue_is_a_refusal_before_start(realtime):
    async with httpx.AsyncClient(auth=AUTH, timeout=120) as c:
        rs = await asyncio.gather(*(c.post(f"{realtime.url}/internal/summarize", json=body()) for _ in range(24)))
    shed = [r for r in rs if r.status_code == 503]
    assert shed and any(r.status_code == 200 for r in rs), [r.status_code for r in rs]
    for r in shed:
        assert r.headers[REFUSED_BEFORE_START_HEADER] == "model_queue_full"
        assert r.headers["content-type"].startswith("application/problem+json")
    for r in rs:
        if r.status_code == 200:
            assert REFUSED_BEFORE_START_HEADER.lower() not in r.headers


async def test_an_estimated_wait_over_the_bound_is_refused_at_once(realtime):
    url = f"{realtime.url}/internal/summarize"
    async with httpx.AsyncClient(auth=AUTH, timeout=120) as c:
        assert (await c.post(url, json=body())).status_code == 200  # a completed summary: an estimate
        metrics = (await c.get(f"{realtime.url}/metrics")).text
        assert metric(metrics, "precis_realtime_service_time_seconds") > 0
        held = asyncio.create_task(c.post(url, json=body(64)))
        deadline = time.monotonic() + 30
        while metric((await c.get(f"{realtime.url}/metrics")).text, "precis_realtime_in_flight") < 1:
            assert time.monotonic() < deadline and not held.done(), "the held summary never got in flight"
            await asyncio.sleep(0.02)
        t0 = time.monotonic()
        r = await c.post(url, json=body(), headers={MAX_WAIT_HEADER: "1"})
        elapsed = time.monotonic() - t0
        if held.done():  # the held summary finished before this one arrived: nothing to assert
            pytest.skip("the held summary finished first (a machine much faster than this test assumes)")
        assert r.status_code == 503, r.text
        assert r.headers[REFUSED_BEFORE_START_HEADER] == "realtime_wait_too_long"
        assert r.headers["retry-after"] == "2"
        assert r.json()["detail"] == "the realtime queue is too long now; retry shortly"
        assert elapsed < 1.0, f"refused after {elapsed:.2f} s: it waited for the model"
        assert (await held).status_code == 200
        metrics = (await c.get(f"{realtime.url}/metrics")).text
    assert metric(metrics, 'precis_realtime_refused_total\\{reason="realtime_wait_too_long"\\}') >= 1
