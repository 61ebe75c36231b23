"""realtime_svc behaviour against the real Triton: limits, overload, Triton down, metrics.

No timing assertions except the contract "Triton down -> 503 within 1 s" (a fail-fast
guarantee, not a performance figure: the call must not wait for a deadline).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import httpx
import pytest

from common.tokenization import default_model_path
from devstack import PORTS, port_open
from tests.realtime.conftest import AUTH, MAX_INPUT_TOKENS, start_realtime_svc

pytestmark = pytest.mark.integration

CJK = re.compile(r"[\u3400-\u9fff]")
EN = (
    "The city council voted on Tuesday to extend the bike lane network by 40 kilometres over three "
    "years. Officials said cycling has risen by a quarter since 2020."
)
ZH = "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关，全长两万多公里，每年吸引大量游客。"


def body(text: str, max_tokens: int = 16, **extra) -> dict:
    return {"text": text, "max_summary_tokens": max_tokens, "request_id": uuid.uuid4().hex, **extra}


def test_summaries_in_their_own_language(realtime):
    with httpx.Client(auth=AUTH, timeout=120) as c:
        en = c.post(f"{realtime.url}/internal/summarize", json=body(EN, 24))
        zh = c.post(f"{realtime.url}/internal/summarize", json=body(ZH, 24))
    assert en.status_code == 200, en.text
    assert zh.status_code == 200, zh.text
    e, z = en.json(), zh.json()
    assert e["summary"].strip() and not CJK.search(e["summary"])
    assert CJK.search(z["summary"]), z["summary"]
    for r in (e, z):
        assert 0 < r["usage"]["output_tokens"] <= 24 and r["usage"]["input_tokens"] > 0
        assert r["timings"]["inference_ms"] > 0
        # the model Triton serves (its MODEL output), not a name configured beside it
        assert r["model"] == default_model_path().stem == "SmolLM2-135M-Instruct.Q4_1"


def test_max_tokens_honoured(realtime):
    with httpx.Client(auth=AUTH, timeout=120) as c:
        for budget in (1, 5):
            r = c.post(f"{realtime.url}/internal/summarize", json=body(EN, budget))
            assert r.status_code == 200, r.text
            assert 0 < r.json()["usage"]["output_tokens"] <= budget


def test_too_long_is_413_naming_the_limit(realtime):
    text = " ".join(f"word{i}" for i in range(200))
    r = httpx.post(f"{realtime.url}/internal/summarize", auth=AUTH, json=body(text), timeout=30)
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("application/problem+json")
    p = r.json()
    assert p["type"].endswith("/text-too-long-for-realtime")
    assert p["limit_tokens"] == MAX_INPUT_TOKENS and p["input_tokens"] > MAX_INPUT_TOKENS
    assert str(MAX_INPUT_TOKENS) in p["detail"]


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        ({"text": "   "}, 422, "blank"),
        ({"text": EN, "max_summary_tokens": 0}, 422, "max_summary_tokens"),
        ({"text": EN, "max_summary_tokens": 100_000}, 422, "max_summary_tokens"),
        ({"text": EN, "language": "no such language!"}, 422, "LANGUAGE"),
    ],
)
def test_bad_inputs_are_clear_4xx(realtime, payload, status, needle):
    r = httpx.post(f"{realtime.url}/internal/summarize", auth=AUTH, json={"request_id": "x", **payload}, timeout=60)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert needle in r.text


async def test_overload_is_503_with_retry_after(realtime):
    # Triton's queue holds 1 request here: a burst of 24 overflows it while a batch runs.
    async with httpx.AsyncClient(auth=AUTH, timeout=120) as c:
        rs = await asyncio.gather(*(c.post(f"{realtime.url}/internal/summarize", json=body(EN, 24)) for _ in range(24)))
    codes = [r.status_code for r in rs]
    assert set(codes) <= {200, 503}, codes
    shed = [r for r in rs if r.status_code == 503]
    assert shed, f"no request was rejected: {codes}"
    assert any(r.status_code == 200 for r in rs)
    for r in shed:
        assert r.headers["retry-after"] == "2"
        assert r.json()["type"].endswith("/model-overloaded")
    async with httpx.AsyncClient(timeout=10) as c:
        metrics = (await c.get(f"{realtime.url}/metrics")).text
    assert re.search(r'^precis_realtime_errors_total\{kind="overloaded"\} [1-9]', metrics, re.M)


def test_metrics_exposed(realtime):
    text = httpx.get(f"{realtime.url}/metrics", timeout=10).text
    for name in (
        "precis_realtime_infer_seconds_bucket",
        "precis_realtime_in_flight",
        'precis_realtime_errors_total{kind="too_long"}',
        "precis_http_request_duration_seconds_bucket",
    ):
        assert name in text, name


def test_triton_never_started_is_503_fast_and_not_ready(tmp_path):
    dead_grpc, svc = PORTS.one(), PORTS.one()  # nothing ever listens on dead_grpc
    assert not port_open(dead_grpc)
    proc = start_realtime_svc(svc, dead_grpc, tmp_path / "svc.log")
    url = f"http://127.0.0.1:{svc}"
    try:
        t0 = time.monotonic()
        r = httpx.post(f"{url}/internal/summarize", auth=AUTH, json=body(EN), timeout=10)
        elapsed = time.monotonic() - t0
        assert r.status_code == 503 and r.headers["retry-after"] == "2", r.text
        assert r.json()["type"].endswith("/model-unavailable")
        assert elapsed < 1.0, f"took {elapsed:.2f}s"
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["ready"] is False
    finally:
        proc.stop()


def test_triton_killed_is_503_fast_and_not_ready(realtime):
    """Runs last in this module: it kills the module's Triton."""
    with httpx.Client(auth=AUTH, timeout=120) as c:
        assert c.post(f"{realtime.url}/internal/summarize", json=body(EN, 2)).status_code == 200
        assert c.get(f"{realtime.url}/readyz").status_code == 200
        realtime.triton.kill()
        for _ in range(3):
            t0 = time.monotonic()
            r = c.post(f"{realtime.url}/internal/summarize", json=body(EN))
            elapsed = time.monotonic() - t0
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "2"
            assert elapsed < 1.0, f"took {elapsed:.2f}s"
        ready = c.get(f"{realtime.url}/readyz")
        assert ready.status_code == 503 and ready.json() == {"ready": False, "checks": {"triton": False}}
