"""``POST /v1/summaries?dry_run=true`` on the live stack (`make run` as tests/e2e/conftest.py boots
it), over plain HTTP: a dry run of a book excerpt is an async estimate of several chunks, with the
worker's chunking, and creates no job (the listing is unchanged); a short text's is realtime; a bad
``dry_run`` value is a 422 problem naming it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from common.chunking import chunk_text, plan_map_reduce
from common.tokenization import TokenCounter
from worker.config import WorkerSettings

pytestmark = pytest.mark.e2e

BOOK = (Path(__file__).resolve().parents[1] / "data/book/pride_and_prejudice.txt").read_text(encoding="utf-8")
TEXT = BOOK[:40000]


def dry(stack, body: dict, key: str | None = None, value: str = "true") -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/summaries",
        params={"dry_run": value},
        json=body,
        headers={**stack.auth(key), "Idempotency-Key": "e2e-dry-run"},
        timeout=120,
    )


def listing(stack) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        r = httpx.get(f"{stack.url}/v1/summaries", params=params, headers=stack.auth(), timeout=60)
        assert r.status_code == 200, r.text
        doc = r.json()
        ids += [i["id"] for i in doc["items"]]
        cursor = doc["next_cursor"]
        if cursor is None:
            return ids


def test_a_dry_run_of_a_book_is_an_async_estimate_and_creates_no_job(stack):
    before = listing(stack)
    r = dry(stack, {"text": TEXT})
    assert r.status_code == 200, r.text
    est = r.json()
    assert est["dry_run"] is True and est["mode"] == "async"
    # the worker's numbers for this text (the stack runs the default windows)
    w = WorkerSettings(env="test")
    counter = TokenCounter()
    chunks = chunk_text(TEXT, counter.tokenizer, w.chunk_tokens)
    assert est["chunks"] == len(chunks) > 1
    assert est["model_calls"] == plan_map_reduce(len(chunks), w.chunk_summary_tokens, w.chunk_tokens).calls
    assert est["input_tokens"] == counter.count(TEXT)
    assert est["throughput"]["window_s"] == 3600
    # an ETA only from a recent pace, else null with the reason
    assert (est["eta_s"] is None) == (
        est["throughput"]["model_calls_per_s"] is None or est["queue_ahead_calls"] is None
    )
    assert est["eta_basis"]
    assert listing(stack) == before
    # the Idempotency-Key was not taken: a real submit with it is a new job (then cancelled)
    sub = httpx.post(
        f"{stack.url}/v1/summaries",
        json={"text": "A note filed as a job and cancelled at once.", "mode": "async"},
        headers={**stack.auth(), "Idempotency-Key": "e2e-dry-run"},
        timeout=60,
    )
    assert sub.status_code == 202 and "idempotent-replayed" not in sub.headers, sub.text
    httpx.delete(f"{stack.url}/v1/summaries/{sub.json()['id']}", headers=stack.auth(), timeout=60)


def test_a_dry_run_of_a_short_text_is_realtime_without_a_model_call(stack):
    r = dry(stack, {"text": "The council voted on Tuesday to extend the bike lanes by 40 km."})
    assert r.status_code == 200, r.text
    est = r.json()
    assert (est["mode"], est["chunks"], est["model_calls"], est["eta_s"]) == ("realtime", 1, 1, None)


def test_a_dry_run_value_that_is_not_a_boolean_is_a_422_problem(stack):
    r = dry(stack, {"text": TEXT}, value="perhaps")
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert doc["type"].endswith("/validation-error") and [e["field"] for e in doc["errors"]] == ["query.dry_run"]
