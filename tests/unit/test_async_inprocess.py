"""async_svc driven in process (httpx.ASGITransport, no port, no lifespan) over a real SQLite store
migrated with Alembic: validation and size problems, the tenant from the gateway's signed token
(tests/security/test_internal_auth.py has the refusals in full), idempotent create, read and
cancel, readiness.

No Kafka here: the outbox relay is built but never started, so the outbox rows a job writes stay
pending (publishing them is tests/integration's business, against a real broker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from async_svc.app import create_app
from async_svc.config import AsyncSettings
from async_svc.deps import State, get_state
from async_svc.intake import GroupCommitter
from common.appstate import set_state
from common.internal_auth import InternalTokenAuth
from common.migrate import upgrade
from common.outbox import OutboxRelay
from common.settings import DEV_INTERNAL_TOKEN_SECRET
from common.store import Database, OutboxMessage
from tests.asserts import assert_problem

DOC_LIMIT = 2048  # max_document_bytes


def as_tenant(tenant: str) -> InternalTokenAuth:
    """Calls signed as the gateway signs them (the settings below keep the local dev secret)."""
    return InternalTokenAuth(DEV_INTERNAL_TOKEN_SECRET, tenant, "async_svc")


class Svc:
    def __init__(self, client: httpx.AsyncClient, state: State) -> None:
        self.client = client
        self.state = state


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Svc]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'precis.db'}"
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    settings = AsyncSettings(env="test", database_url=url, max_document_bytes=DOC_LIMIT)
    relay = OutboxRelay(db, producer=None)  # type: ignore[arg-type]  # never started: no broker here
    committer = GroupCommitter(db, max_batch=8)
    committer.start()
    state = State(settings, db, relay, committer)
    app = create_app()
    set_state(app, state)  # what the lifespan does, without Kafka
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://async.test", auth=as_tenant("acme")
    )
    try:
        yield Svc(client, state)
    finally:
        await client.aclose()
        await committer.stop()
        await db.close()


async def outbox_rows(db: Database) -> int:
    async with db.session() as s:
        return (await s.execute(select(func.count()).select_from(OutboxMessage))).scalar_one()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "text"),
        ({"text": ""}, "text"),
        ({"text": "x", "colour": "blue"}, "colour"),
        ({"text": "x", "max_summary_tokens": 0}, "max_summary_tokens"),
        ({"text": "x", "notify": {"webhook_url": "not a url"}}, "notify.webhook_url"),
    ],
)
async def test_invalid_body_is_422_naming_the_field(svc: Svc, body: dict[str, Any], field: str) -> None:
    doc = assert_problem(await svc.client.post("/internal/jobs", json=body), 422, "validation-error")
    assert field in [e["field"] for e in doc["errors"]]
    assert await outbox_rows(svc.state.db) == 0


async def test_blank_text_is_422(svc: Svc) -> None:
    doc = assert_problem(await svc.client.post("/internal/jobs", json={"text": " \n\t "}), 422, "validation-error")
    assert doc["detail"] == "text: must not be blank"


async def test_document_over_the_limit_is_413_naming_the_limit(svc: Svc) -> None:
    r = await svc.client.post("/internal/jobs", json={"text": "é" * DOC_LIMIT})
    doc = assert_problem(r, 413, "text-too-large")
    assert doc["limit_bytes"] == DOC_LIMIT
    assert doc["size_bytes"] == 2 * DOC_LIMIT
    assert f"the limit is {DOC_LIMIT} bytes" in doc["detail"]


@pytest.mark.parametrize("headers", [{}, {"X-Precis-Tenant": "acme"}])
async def test_without_the_gateways_token_it_is_401(svc: Svc, headers: dict[str, str]) -> None:
    # the bare tenant header the gateway once sent is no credential any more (issue #14 item 7);
    # auth=None: this request goes unsigned
    r = await svc.client.post("/internal/jobs", json={"text": "x"}, headers=headers, auth=None)
    assert "Authorization" in assert_problem(r, 401, "internal-unauthorized")["detail"]
    assert_problem(await svc.client.get("/internal/jobs/abc", headers=headers, auth=None), 401, "internal-unauthorized")
    assert await outbox_rows(svc.state.db) == 0


async def test_idempotency_key_over_255_chars_is_422(svc: Svc) -> None:
    r = await svc.client.post("/internal/jobs", json={"text": "x"}, headers={"Idempotency-Key": "k" * 256})
    assert "Idempotency-Key" in assert_problem(r, 422, "validation-error")["detail"]


async def test_create_read_cancel(svc: Svc) -> None:
    r = await svc.client.post("/internal/jobs", json={"text": "A document.", "metadata": {"ref": 1}})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and job["metadata"] == {"ref": 1}
    assert "idempotent-replayed" not in r.headers
    assert await outbox_rows(svc.state.db) == 1  # the job message, pending for the relay

    r = await svc.client.get(f"/internal/jobs/{job['id']}")
    assert (r.status_code, r.json()["id"]) == (200, job["id"])
    # another tenant's job answers like an unknown one
    assert_problem(await svc.client.get(f"/internal/jobs/{job['id']}", auth=as_tenant("other")), 404, "not-found")

    r = await svc.client.delete(f"/internal/jobs/{job['id']}")
    assert (r.status_code, r.json()["status"]) == (200, "cancelled")
    doc = assert_problem(await svc.client.delete(f"/internal/jobs/{job['id']}"), 409, "job-finished")
    assert "already cancelled" in doc["detail"]


async def test_idempotent_create_replays_and_refuses_a_different_body(svc: Svc) -> None:
    headers = {"Idempotency-Key": "k1"}
    first = await svc.client.post("/internal/jobs", json={"text": "Same."}, headers=headers)
    again = await svc.client.post("/internal/jobs", json={"text": "Same."}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    doc = assert_problem(
        await svc.client.post("/internal/jobs", json={"text": "Different."}, headers=headers),
        409,
        "idempotency-key-reused",
    )
    assert "'k1'" in doc["detail"]
    assert await outbox_rows(svc.state.db) == 1


async def test_unknown_job_is_404(svc: Svc) -> None:
    doc = assert_problem(await svc.client.get("/internal/jobs/nope"), 404, "not-found")
    assert doc["detail"] == "no summary job with this id"


async def test_healthz_and_readyz(svc: Svc) -> None:
    r = await svc.client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    r = await svc.client.get("/readyz")
    assert (r.status_code, r.json()) == (200, {"ready": True, "checks": {"database": True, "kafka_outbox": True}})
    svc.state.relay.healthy = False
    r = await svc.client.get("/readyz")
    assert (r.status_code, r.json()) == (503, {"ready": False, "checks": {"database": True, "kafka_outbox": False}})


async def test_readyz_checks_can_be_overridden(svc: Svc) -> None:
    """The state dependency is what tests replace: here a state whose database is gone."""
    gone = Database("postgresql+asyncpg://precis@127.0.0.1:9/precis")  # nothing listens on port 9
    state = State(svc.state.settings, gone, svc.state.relay, svc.state.committer)
    app = create_app()

    async def other_state() -> State:
        return state

    app.dependency_overrides[get_state] = other_state
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as c:
        r = await c.get("/readyz")
    await gone.close()
    assert (r.status_code, r.json()["checks"]) == (503, {"database": False, "kafka_outbox": True})


async def test_a_tenant_over_its_job_quota_gets_429_with_retry_after(svc: Svc) -> None:
    svc.state.committer.quota = AsyncSettings(
        env="test", database_url=svc.state.settings.database_url, quota_max_active_jobs=2, quota_retry_after_s=9
    ).tenant_quota()
    for i in range(2):
        r = await svc.client.post("/internal/jobs", json={"text": f"Document {i}."})
        assert r.status_code == 202, r.text
    r = await svc.client.post("/internal/jobs", json={"text": "One too many."})
    doc = assert_problem(r, 429, "quota-exceeded")
    assert r.headers["retry-after"] == "9"
    assert (doc["quota"], doc["limit"], doc["current"]) == ("active_jobs", 2, 2)
    assert "active_jobs is 2 jobs per tenant and this tenant holds 2" in doc["detail"]
    assert await outbox_rows(svc.state.db) == 2
    r = await svc.client.post("/internal/jobs", json={"text": "Another tenant."}, auth=as_tenant("other"))
    assert r.status_code == 202, r.text
