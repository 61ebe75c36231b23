"""``GET /v1/summaries`` (listing) and the 410 of an expired job, in process: the gateway
(httpx.ASGITransport, its state handed in) forwarding to the real async_svc app over a real SQLite
store migrated with Alembic; no ports, no Kafka (the outbox rows stay pending)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import update

from async_svc.app import create_app as create_async_app
from async_svc.config import AsyncSettings
from async_svc.deps import State as AsyncState
from async_svc.intake import GroupCommitter
from common.appstate import set_state
from common.migrate import upgrade
from common.outbox import OutboxRelay
from common.store import Database, Job
from common.store.retention import RetentionSweeper
from common.tokenization import TokenCounter
from gateway.config import hash_key
from gateway.deps import State
from tests.asserts import assert_problem
from tests.unit.test_gateway_inprocess import ASYNC, AUTH, KEY, REALTIME, ASGIUpstream, gateway_client, settings
from worker.config import WorkerSettings

OTHER = {"Authorization": "Bearer k-other"}
LONG = "A paragraph of a long document. " * 40


class Stack:
    def __init__(self, client: httpx.AsyncClient, db: Database) -> None:
        self.client = client
        self.db = db

    async def submit(self, headers: dict[str, str] = AUTH) -> str:
        r = await self.client.post("/v1/summaries", json={"text": LONG, "mode": "async"}, headers=headers)
        assert r.status_code == 202, r.text
        return r.json()["id"]

    async def pages(self, limit: int, headers: dict[str, str] = AUTH, **params: str) -> list[list[str]]:
        out: list[list[str]] = []
        cursor = None
        while True:
            q: dict[str, str | int] = {"limit": limit, **params}
            if cursor:
                q["cursor"] = cursor
            r = await self.client.get("/v1/summaries", params=q, headers=headers)
            assert r.status_code == 200, r.text
            doc = r.json()
            out.append([item["id"] for item in doc["items"]])
            cursor = doc["next_cursor"]
            if cursor is None:
                return out


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'precis.db'}"
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    committer = GroupCommitter(db, max_batch=8)
    committer.start()
    async_app = create_async_app()
    relay = OutboxRelay(db, producer=None)  # type: ignore[arg-type]  # never started: no broker here
    set_state(async_app, AsyncState(AsyncSettings(env="test", database_url=url), db, relay, committer))

    upstream = ASGIUpstream({ASYNC: async_app, REALTIME: async_app})
    keys = SecretStr(json.dumps({hash_key(KEY): "acme", hash_key("k-other"): "other"}))
    state = State(settings(api_keys=keys), upstream, TokenCounter())
    client = gateway_client(state)
    try:
        yield Stack(client, db)
    finally:
        await client.aclose()
        await upstream.aclose()
        await committer.stop()
        await db.close()


async def test_listing_pages_newest_first_for_the_callers_tenant_only(stack: Stack) -> None:
    mine = [await stack.submit() for _ in range(5)]
    theirs = [await stack.submit(OTHER) for _ in range(2)]
    pages = await stack.pages(2)
    assert pages == [mine[4:2:-1], mine[2:0:-1], mine[:1]]
    assert await stack.pages(10, OTHER) == [theirs[::-1]]
    r = await stack.client.get("/v1/summaries", headers=AUTH)
    item = r.json()["items"][0]
    assert item["id"] == mine[-1] and item["status"] == "queued" and "text" not in item and "document" not in item
    assert item["expires_at"] is None and item["expired_at"] is None
    assert await stack.pages(10, status="queued") == [mine[::-1]]
    assert await stack.pages(10, status="succeeded") == [[]]


async def test_listing_needs_an_api_key(stack: Stack) -> None:
    assert_problem(await stack.client.get("/v1/summaries"), 401, "unauthorized")


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"limit": "101"}, "limit", "100"),
        ({"limit": "0"}, "limit", "1"),
        ({"limit": "ten"}, "limit", "integer"),
        ({"status": "done"}, "status", "queued"),
        ({"created_after": "yesterday"}, "created_after", "datetime"),
        ({"cursor": "c" * 513}, "cursor", "512"),
    ],
)
async def test_bad_parameters_are_422_naming_the_parameter_and_limit(
    stack: Stack, params: dict[str, str], field: str, says: str
) -> None:
    doc = assert_problem(await stack.client.get("/v1/summaries", params=params, headers=AUTH), 422, "validation-error")
    assert [e["field"] for e in doc["errors"]] == [f"query.{field}"]
    assert says in doc["detail"]


async def test_a_tampered_cursor_is_a_422_problem(stack: Stack) -> None:
    for _ in range(3):
        await stack.submit()
    r = await stack.client.get("/v1/summaries", params={"limit": 1}, headers=AUTH)
    cursor = r.json()["next_cursor"]
    assert cursor
    for bad in (cursor[:-2], cursor[::-1], "bm90IGEgY3Vyc29y"):
        r = await stack.client.get("/v1/summaries", params={"cursor": bad}, headers=AUTH)
        doc = assert_problem(r, 422, "invalid-cursor")
        assert doc["instance"] == "/v1/summaries"  # the public path, never /internal/jobs


async def test_an_expired_job_is_410_through_the_gateway_and_listed_as_expired(stack: Stack) -> None:
    jid = await stack.submit()
    keep = await stack.submit()
    past = datetime.now(UTC) - timedelta(minutes=1)
    async with stack.db.transaction() as s:
        await s.execute(update(Job).where(Job.id == jid).values(status="cancelled", finished_at=past, expires_at=past))
    assert await RetentionSweeper(stack.db).sweep() == 1

    r = await stack.client.get(f"/v1/summaries/{jid}", headers=AUTH)
    doc = assert_problem(r, 410, "job-expired")
    assert jid in doc["detail"] and doc["instance"] == f"/v1/summaries/{jid}" and doc["expired_at"]
    # the other tenant gets the unknown-id answer, not the 410
    assert_problem(await stack.client.get(f"/v1/summaries/{jid}", headers=OTHER), 404, "not-found")

    items = {i["id"]: i for i in (await stack.client.get("/v1/summaries", headers=AUTH)).json()["items"]}
    assert items[jid]["expired_at"] and items[jid]["status"] == "cancelled" and items[jid]["metadata"] is None
    assert items[keep]["expired_at"] is None
    assert (await stack.client.get(f"/v1/summaries/{keep}", headers=AUTH)).status_code == 200


def test_retention_days_is_read_by_async_svc_and_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECIS_RETENTION_DAYS", "7.5")
    monkeypatch.setenv("PRECIS_RETENTION_SWEEP_INTERVAL_S", "5")
    a = AsyncSettings(env="test")
    assert a.retention == timedelta(days=7.5) and a.retention_sweep_interval_s == 5
    assert WorkerSettings(env="test").retention == timedelta(days=7.5)
    monkeypatch.setenv("PRECIS_RETENTION_DAYS", "0")
    with pytest.raises(ValueError, match="retention_days"):
        AsyncSettings(env="test")
    monkeypatch.delenv("PRECIS_RETENTION_DAYS")
    assert AsyncSettings(env="test").retention == timedelta(days=30)
