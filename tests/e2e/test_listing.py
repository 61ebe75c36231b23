"""``GET /v1/summaries`` and retention on the live stack (`make run` as tests/e2e/conftest.py boots
it), over plain HTTP as curl would: pages with a cursor while jobs are added, tenant isolation,
422 problems for bad parameters, and an expired job's 410 after the live sweeper tombstoned it.
(The SDK and CLI side: tests/e2e/test_sdk.py.)"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.orm import undefer

from common.store import Database, Job

pytestmark = pytest.mark.e2e

TEXT = "A short note that is filed as a job, then cancelled at once so the worker has nothing to do."


def submit(stack, key: str | None = None) -> str:
    r = httpx.post(
        f"{stack.url}/v1/summaries", json={"text": TEXT, "mode": "async"}, headers=stack.auth(key), timeout=60
    )
    assert r.status_code == 202, r.text
    jid = r.json()["id"]
    httpx.delete(f"{stack.url}/v1/summaries/{jid}", headers=stack.auth(key), timeout=60)  # queued → cancelled
    return jid


def page(stack, key: str | None = None, **params) -> httpx.Response:
    return httpx.get(f"{stack.url}/v1/summaries", params=params, headers=stack.auth(key), timeout=60)


def assert_problem(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert doc["type"].endswith(f"/{code}") and doc["status"] == status and doc["detail"]
    assert "Traceback" not in r.text and "/internal/" not in r.text
    return doc


def test_pages_through_the_callers_jobs_while_more_are_added(stack):
    mine = [submit(stack) for _ in range(7)]
    first = httpx.get(f"{stack.url}/v1/summaries/{mine[0]}", headers=stack.auth(), timeout=60).json()
    # just before this test's first job: earlier tests' jobs are left out
    since = (datetime.fromisoformat(first["created_at"]) - timedelta(microseconds=1)).isoformat()
    theirs = [submit(stack, stack.other_key) for _ in range(2)]
    seen: list[str] = []
    added: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, "created_after": since, **({"cursor": cursor} if cursor else {})}
        r = page(stack, **params)
        assert r.status_code == 200, r.text
        doc = r.json()
        seen += [i["id"] for i in doc["items"]]
        for i in doc["items"]:
            assert "text" not in i and "document" not in i
            # cancelled at once (or cancelling, had a worker claimed it first)
            assert i["status"] in ("cancelled", "cancelling") and i["expired_at"] is None
        cursor = doc["next_cursor"]
        if cursor is None:
            break
        added.append(submit(stack))  # a newer job between two pages
    assert seen == mine[::-1]  # newest first; none skipped, none twice; the added ones come later
    assert len(added) == 2
    fresh = page(stack, limit=100, created_after=since).json()
    assert [i["id"] for i in fresh["items"]] == (mine + added)[::-1] and fresh["next_cursor"] is None
    other = page(stack, stack.other_key, limit=100, created_after=since).json()
    assert [i["id"] for i in other["items"]] == theirs[::-1]


@pytest.mark.parametrize(
    ("params", "code", "says"),
    [
        ({"limit": 101}, "validation-error", "100"),
        ({"status": "finished"}, "validation-error", "status"),
        ({"created_after": "last week"}, "validation-error", "created_after"),
        ({"cursor": "dGFtcGVyZWQ"}, "invalid-cursor", "cursor"),
    ],
)
def test_bad_parameters_are_422_problems(stack, params, code, says):
    doc = assert_problem(page(stack, **params), 422, code)
    assert says in doc["detail"] and doc.get("instance", "/v1/summaries") == "/v1/summaries"


def test_listing_without_a_key_is_401(stack):
    assert_problem(httpx.get(f"{stack.url}/v1/summaries", timeout=60), 401, "unauthorized")


def _expire_now(stack, job_id: str) -> None:
    """Move the job's expires_at into the past in the stack's own store (what 30 days would do)."""

    async def go() -> None:
        db = Database(f"sqlite+aiosqlite:///{stack.var / 'precis.db'}")
        try:
            async with db.transaction() as s:
                past = datetime.now(UTC) - timedelta(seconds=1)
                await s.execute(update(Job).where(Job.id == job_id).values(expires_at=past))
        finally:
            await db.close()

    asyncio.run(go())


def _row(stack, job_id: str) -> Job:
    async def go() -> Job:
        db = Database(f"sqlite+aiosqlite:///{stack.var / 'precis.db'}")
        try:
            async with db.session() as s:
                # Job.document is deferred (common/store/models.py): load it here, the test reads it
                job = await s.get(Job, job_id, options=[undefer(Job.document)])
                assert job is not None
                return job
        finally:
            await db.close()

    return asyncio.run(go())


def test_an_expired_job_is_tombstoned_by_the_live_sweeper_and_answers_410(stack):
    jid = submit(stack)
    deadline = time.monotonic() + 120
    while True:  # cancelled at once, or (claimed by a worker first) once it stops between chunks
        r = httpx.get(f"{stack.url}/v1/summaries/{jid}", headers=stack.auth(), timeout=60)
        assert r.status_code == 200, r.text
        if r.json()["status"] == "cancelled" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.json()["status"] == "cancelled" and r.json()["expires_at"], r.text
    _expire_now(stack, jid)

    doc = assert_problem(
        httpx.get(f"{stack.url}/v1/summaries/{jid}", headers=stack.auth(), timeout=60), 410, "job-expired"
    )
    assert jid in doc["detail"] and doc["instance"] == f"/v1/summaries/{jid}"
    assert_problem(
        httpx.get(f"{stack.url}/v1/summaries/{jid}", headers=stack.auth(stack.other_key), timeout=60), 404, "not-found"
    )

    deadline = time.monotonic() + 60  # the stack sweeps every second (PRECIS_RETENTION_SWEEP_INTERVAL_S)
    row = _row(stack, jid)
    while row.expired_at is None and time.monotonic() < deadline:
        time.sleep(0.5)
        row = _row(stack, jid)
    assert row.expired_at is not None, "the live sweeper never tombstoned the job"
    assert row.document == "" and row.tenant and row.status == "cancelled"
    assert_problem(httpx.get(f"{stack.url}/v1/summaries/{jid}", headers=stack.auth(), timeout=60), 410, "job-expired")
    items = {i["id"]: i for i in page(stack, limit=100).json()["items"]}
    assert items[jid]["expired_at"] and items[jid]["status"] == "cancelled"
