"""End to end through the gateway, on the real stack: Triton + real model, Kafka, store, SMTP."""

from __future__ import annotations

import email
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PARAGRAPH = (
    "The city council voted on Tuesday to extend the bike lane network by 40 kilometres over the next "
    "three years. Officials said cycling has risen by a quarter since 2020, and that the new lanes will "
    "connect the university district with the central station. Local businesses were split: some "
    "welcomed more foot traffic, while others worried about losing parking spaces."
)


def long_text() -> str:
    book = (ROOT / "tests/data/book/pride_and_prejudice.txt").read_text()
    words = book.split(" ")
    return " ".join(words[2000:3800])  # ~1,800 words ≈ 2,400 tokens: several 768-token windows


def assert_problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["type"] and body["detail"]
    assert "Traceback" not in r.text
    return body


def test_short_paragraph_gets_a_realtime_summary(stack):
    r = httpx.post(f"{stack.url}/v1/summaries", json={"text": PARAGRAPH}, headers=stack.auth(), timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "realtime"
    assert len(body["summary"].split()) >= 3
    assert body["usage"]["input_tokens"] > 20 and body["usage"]["output_tokens"] > 0
    print("\nrealtime summary:", body["summary"], body["timings"])


def test_long_text_becomes_a_job_that_succeeds_and_sends_one_email(stack):
    text = long_text()
    r = httpx.post(
        f"{stack.url}/v1/summaries",
        json={"text": text, "notify": {"email": "reader@example.com"}, "metadata": {"case": "e2e"}},
        headers=stack.auth(),
        timeout=60,
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["mode"] == "async" and body["status"] == "queued"
    assert r.headers["location"] == body["status_url"]
    job_id = body["id"]

    t0 = time.monotonic()
    seen_progress = set()
    while True:
        view = httpx.get(body["status_url"], headers=stack.auth(), timeout=10).json()
        seen_progress.add((view["progress"]["chunks_done"], view["progress"]["chunks_total"]))
        if view["status"] in ("succeeded", "failed", "cancelled"):
            break
        assert time.monotonic() - t0 < 600, f"job still {view['status']} after 600s"
        time.sleep(1)
    print(f"\nlong job: {view['status']} in {time.monotonic() - t0:.1f}s, progress seen {sorted(seen_progress)}")
    assert view["status"] == "succeeded", view
    assert view["progress"]["chunks_total"] > 1
    assert view["progress"]["chunks_done"] == view["progress"]["chunks_total"]
    assert len(view["summary"].split()) >= 5
    assert view["started_at"] and view["finished_at"] and view["metadata"] == {"case": "e2e"}

    # Exactly one email for this job reaches the SMTP sink, carrying the summary.
    maildir = stack.var / "mail"
    deadline = time.monotonic() + 60
    mine: list = []
    while time.monotonic() < deadline:
        mine = [
            m
            for m in (email.message_from_bytes(p.read_bytes()) for p in maildir.glob("*.eml"))
            if m["X-Precis-Job-Id"] == job_id
        ]
        if mine:
            break
        time.sleep(0.5)
    time.sleep(3)  # a duplicate would arrive within this window
    mine = [
        m
        for m in (email.message_from_bytes(p.read_bytes()) for p in maildir.glob("*.eml"))
        if m["X-Precis-Job-Id"] == job_id
    ]
    assert len(mine) == 1
    assert view["summary"].strip()[:60] in mine[0].get_payload(decode=True).decode()
    final = httpx.get(body["status_url"], headers=stack.auth(), timeout=10).json()
    assert final["notifications"][0]["channel"] == "email" and final["notifications"][0]["status"] == "sent"

    # Another tenant sees exactly what an unknown id shows.
    other = httpx.get(body["status_url"], headers=stack.auth(stack.other_key), timeout=10)
    unknown = httpx.get(
        f"{stack.url}/v1/summaries/00000000-0000-4000-8000-000000000000",
        headers=stack.auth(stack.other_key),
        timeout=10,
    )
    a, b = assert_problem(other, 404), assert_problem(unknown, 404)
    assert {k: v for k, v in a.items() if k != "instance"} == {k: v for k, v in b.items() if k != "instance"}


def test_unknown_id_is_404_problem(stack):
    r = httpx.get(f"{stack.url}/v1/summaries/00000000-0000-4000-8000-000000000000", headers=stack.auth())
    assert_problem(r, 404)
    assert_problem(httpx.get(f"{stack.url}/v1/summaries/not-a-uuid", headers=stack.auth()), 404)


def test_empty_text_is_422_problem(stack):
    body = assert_problem(httpx.post(f"{stack.url}/v1/summaries", json={"text": ""}, headers=stack.auth()), 422)
    assert "text" in body["detail"]
    assert_problem(httpx.post(f"{stack.url}/v1/summaries", json={"text": "   "}, headers=stack.auth()), 422)


def test_auth_and_bad_requests_get_clear_problems(stack):
    assert_problem(httpx.post(f"{stack.url}/v1/summaries", json={"text": "hi"}), 401)
    assert_problem(httpx.post(f"{stack.url}/v1/summaries", json={"text": "hi"}, headers=stack.auth("wrong")), 401)
    r = httpx.post(
        f"{stack.url}/v1/summaries", content=b"{not json", headers={**stack.auth(), "content-type": "application/json"}
    )
    assert_problem(r, 422)
    r = httpx.post(f"{stack.url}/v1/summaries", content=b"text", headers={**stack.auth(), "content-type": "text/plain"})
    assert_problem(r, 415)
    r = httpx.post(f"{stack.url}/v1/summaries", json={"text": "hi", "max_summary_tokens": 100000}, headers=stack.auth())
    assert "512" in assert_problem(r, 422)["detail"]
    # An explicit realtime request for a long text: 413 naming the realtime limit.
    r = httpx.post(
        f"{stack.url}/v1/summaries", json={"text": long_text(), "mode": "realtime"}, headers=stack.auth(), timeout=30
    )
    body = assert_problem(r, 413)
    assert body["limit_tokens"] and str(body["limit_tokens"]) in body["detail"]


def test_cancel_a_queued_or_running_job(stack):
    r = httpx.post(
        f"{stack.url}/v1/summaries", json={"text": long_text() * 3, "mode": "async"}, headers=stack.auth(), timeout=60
    )
    assert r.status_code == 202
    url = r.json()["status_url"]
    c = httpx.delete(url, headers=stack.auth(), timeout=10)
    assert c.status_code == 200 and c.json()["status"] in ("cancelled", "cancelling")
    deadline = time.monotonic() + 300
    while (v := httpx.get(url, headers=stack.auth()).json())["status"] not in ("cancelled", "succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(1)
    assert v["status"] == "cancelled"


def test_every_service_exposes_health_and_metrics(stack):
    for port in stack.port_map.services:  # gateway, realtime_svc, async_svc, worker, notifier
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 200
        m = httpx.get(f"{base}/metrics")
        assert m.status_code == 200 and "precis_http_request_duration_seconds" in m.text
    # the gateway's rate limits count in the Redis `make run` started (PRECIS_RATE_LIMIT_STORAGE_URI=redis)
    limits = httpx.get(f"{stack.url}/readyz").json()["rate_limits"]
    assert (limits["storage"], limits["scope"], limits["store_reachable"]) == ("redis", "global", True)
    r = httpx.get(f"{stack.url}/v1/summaries/not-a-job", headers=stack.auth())
    assert r.status_code == 404 and int(r.headers["ratelimit-remaining"]) < int(r.headers["ratelimit-limit"])
