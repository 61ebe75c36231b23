"""Outbox → real Kafka broker → notifier → real SMTP server (and a real webhook receiver)."""

from __future__ import annotations

import asyncio
import base64
import email
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from aiohttp import web

from async_svc.jobs import create_job
from common import kafka
from common.migrate import upgrade
from common.outbox import OutboxRelay
from common.settings import CommonSettings
from common.store import Database
from notifier.config import NotifierSettings
from notifier.service import Notifier
from worker.jobstate import JobStore

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'precis.db'}"
    await asyncio.to_thread(upgrade, url)
    d = Database(url)
    yield d
    await d.close()


async def test_outbox_relay_publishes_to_real_broker(db, kafka_broker):
    s = CommonSettings(kafka_bootstrap_servers=kafka_broker, env="test")
    await kafka.ensure_topics(s)
    producer = kafka.make_producer(s, "test")
    await producer.start()
    relay = OutboxRelay(db, producer)
    job, _ = await create_job(
        db,
        tenant="t",
        text="doc. " * 5,
        max_summary_tokens=None,
        language="auto",
        notify=None,
        metadata=None,
        idempotency_key=None,
    )
    assert await relay.flush() == 1
    assert await relay.flush() == 0  # published rows are marked, not sent twice
    await producer.stop()

    consumer = kafka.make_consumer(s, kafka.JOBS, group_id="test-outbox", client_id="t")
    await consumer.start()
    try:
        got = []
        for _ in range(40):
            batch = await consumer.getmany(timeout_ms=500)
            got += [v for rs in batch.values() for r in rs if (v := kafka.loads(r.value))["job_id"] == job.id]
            if got:
                break
    finally:
        await consumer.stop()
    assert got and got[0]["job_id"] == job.id and got[0]["attempt"] == 1


async def _finished_job(db, email_to=None, webhook=None):
    notify = {}
    if email_to:
        notify["email"] = email_to
    if webhook:
        notify["webhook_url"] = webhook
    job, _ = await create_job(
        db,
        tenant="t",
        text="doc. " * 5,
        max_summary_tokens=None,
        language="auto",
        notify=notify,
        metadata=None,
        idempotency_key=None,
    )
    w = JobStore(db, "w", 30)
    assert await w.claim(job.id)
    assert await w.succeed(job.id, "A crisp summary of the document.", 2)
    return job


def _event(job_id: str) -> bytes:
    return kafka.dumps(
        {
            "event_id": f"{job_id}:succeeded",
            "job_id": job_id,
            "type": "job.succeeded",
            "at": datetime.now(UTC).isoformat(),
        }
    )


async def test_email_sent_once_through_real_smtp_even_when_event_redelivered(db, smtp_sink):
    port, maildir = smtp_sink
    job = await _finished_job(db, email_to="reader@example.com")
    import httpx

    async with httpx.AsyncClient() as http:
        n = Notifier(NotifierSettings(smtp_port=port, env="test"), db, http)
        await n.handle(_event(job.id))
        await n.handle(_event(job.id))  # at-least-once delivery: the same event again
    mails = [email.message_from_bytes(p.read_bytes()) for p in maildir.glob("*.eml")]
    mine = [m for m in mails if m["X-Precis-Job-Id"] == job.id]
    assert len(mine) == 1
    assert "A crisp summary of the document." in mine[0].get_payload(decode=True).decode()
    assert mine[0]["To"] == "reader@example.com"


async def test_signed_webhook_delivered_and_verifiable(db, unused_tcp_port_factory=None):
    received = []
    secret_raw = b"super-secret-webhook-key-123456"
    secret = "whsec_" + base64.b64encode(secret_raw).decode()

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        job = await _finished_job(db, webhook=f"http://127.0.0.1:{port}/hook")
        import httpx

        async with httpx.AsyncClient() as http:
            # the local receiver is a private address: admitted by the operator allowlist only
            s = NotifierSettings(
                webhook_secrets=json.dumps({"t": [secret]}),
                env="test",
                webhook_allow_cidrs=["127.0.0.1/32"],
                webhook_allowed_ports=[port],
            )
            n = Notifier(s, db, http)
            await n.handle(_event(job.id))
            await n.handle(_event(job.id))
    finally:
        await runner.cleanup()
    assert len(received) == 1
    headers, body = received[0]
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(secret_raw, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    assert b"A crisp summary" in body


async def test_read_topic_returns_every_message_from_the_beginning(kafka_broker):
    s = CommonSettings(kafka_bootstrap_servers=kafka_broker, env="test")
    await kafka.ensure_topics(s)
    producer = kafka.make_producer(s, "test-read")
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(kafka.JOBS_DLQ, key=f"k{i}", value={"n": i, "tag": "read-topic"})
    finally:
        await producer.stop()
    got = [m for m in await kafka.read_topic(kafka_broker, kafka.JOBS_DLQ) if m.get("tag") == "read-topic"]
    assert sorted(m["n"] for m in got) == [0, 1, 2, 3, 4]
