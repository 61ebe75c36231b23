"""Issue #14 item 6b: webhook signing secrets are per tenant and rotate with Standard Webhooks'
multi-signature header. Deliveries go through the notifier's handler to a real receiver on
loopback that verifies with the ``standardwebhooks`` reference library."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import httpx
import pytest
from sqlalchemy import select

from async_svc.jobs import create_job
from common import kafka
from common.migrate import upgrade
from common.schemas import NotificationStatus
from common.store import Database, Notification
from notifier.config import NotifierSettings, dev_webhook_secret
from notifier.service import Notifier
from tests.security.webhook_receivers import good_receiver
from worker.jobstate import JobStore

A_NEW = "whsec_" + base64.b64encode(b"tenant-a-current-secret-000001").decode()
A_OLD = "whsec_" + base64.b64encode(b"tenant-a-previous-secret-00002").decode()
B_ONLY = "whsec_" + base64.b64encode(b"tenant-b-only-secret-000000003").decode()
SECRETS = {"A": [A_NEW, A_OLD], "B": [B_ONLY]}


@pytest.fixture
async def db(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'precis.db'}"
    await asyncio.to_thread(upgrade, url)
    d = Database(url)
    yield d
    await d.close()


async def finished_job(db: Database, tenant: str, url: str) -> str:
    job, _ = await create_job(
        db,
        tenant=tenant,
        text="doc. " * 5,
        max_summary_tokens=None,
        language="auto",
        notify={"webhook_url": url},
        metadata=None,
        idempotency_key=None,
    )
    w = JobStore(db, "w", 30)
    assert await w.claim(job.id)
    assert await w.succeed(job.id, "summary", 1)
    return job.id


def event(job_id: str) -> bytes:
    return kafka.dumps({"event_id": f"{job_id}:succeeded", "job_id": job_id, "type": "job.succeeded", "at": "2024"})


def settings(port: int, **kw) -> NotifierSettings:
    return NotifierSettings(
        webhook_allow_cidrs=["127.0.0.1/32"], webhook_allowed_ports=[port], webhook_retry_schedule_s=[0], **kw
    )


async def status_of(db: Database, job_id: str) -> Notification:
    async with db.session() as s:
        return (await s.execute(select(Notification).where(Notification.job_id == job_id))).scalar_one()


async def test_each_tenant_signed_with_its_own_secrets_all_of_them(db, caplog):
    caplog.set_level(logging.DEBUG)
    keys = {"A-new": A_NEW, "A-old": A_OLD, "B": B_ONLY}
    async with good_receiver(keys) as rx, httpx.AsyncClient() as http:
        a = await finished_job(db, "A", rx.url("a"))
        b = await finished_job(db, "B", rx.url("b"))
        n = Notifier(
            settings(
                rx.port,
                env="production",
                database_url="postgresql+asyncpg://u@db/x",
                webhook_secrets=json.dumps(SECRETS),
            ),
            db,
            http,
        )
        await n.handle(event(a))
        await n.handle(event(b))
    (da,), (db_,) = rx.at("a"), rx.at("b")
    # tenant A: two signatures (rotation), each verifies alone; B's secret verifies neither
    assert len(da.headers["webhook-signature"].split(" ")) == 2
    assert da.verified_by == ["A-new", "A-old"]
    # tenant B: only its own secret; neither of A's verifies B's event
    assert len(db_.headers["webhook-signature"].split(" ")) == 1
    assert db_.verified_by == ["B"]
    # no secret, nor any signature, in the logs
    for secret in (A_NEW, A_OLD, B_ONLY):
        assert secret not in caplog.text and secret.removeprefix("whsec_") not in caplog.text
    assert da.headers["webhook-signature"] not in caplog.text


async def test_tenant_without_secret_is_refused_outside_local_mode(db):
    async with good_receiver({"B": B_ONLY}) as rx, httpx.AsyncClient() as http:
        c = await finished_job(db, "C", rx.url("c"))
        n = Notifier(
            settings(
                rx.port,
                env="production",
                database_url="postgresql+asyncpg://u@db/x",
                webhook_secrets=json.dumps({"B": [B_ONLY]}),
            ),
            db,
            http,
        )
        await n.handle(event(c))
    assert rx.at("c") == []  # nothing sent unsigned, nor signed with another tenant's secret
    row = await status_of(db, c)
    assert row.status == NotificationStatus.failed
    assert row.detail == "no webhook signing secret is configured for tenant 'C' (PRECIS_WEBHOOK_SECRETS)"


async def test_local_mode_signs_with_a_derived_per_tenant_dev_secret(db):
    keys = {"dev-C": dev_webhook_secret("C"), "dev-D": dev_webhook_secret("D")}
    async with good_receiver(keys) as rx, httpx.AsyncClient() as http:
        c = await finished_job(db, "C", rx.url("c"))
        n = Notifier(settings(rx.port, env="local"), db, http)
        await n.handle(event(c))
    (dc,) = rx.at("c")
    assert dc.verified_by == ["dev-C"]
    assert (await status_of(db, c)).status == NotificationStatus.sent
