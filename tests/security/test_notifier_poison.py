"""Issue #14 item 2: no event can stop the notifier. Poisoned events go through the notifier's real
consumer loop (real Kafka), among good ones delivered to a real SMTP sink and a real webhook
receiver on loopback: every good one is delivered, each poisoned one ends `failed` with a reason
(or is dropped, when it names no notification), and the notifier stays up and keeps consuming."""

from __future__ import annotations

import asyncio
import base64
import email
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from sqlalchemy import select

from async_svc.jobs import create_job
from common import kafka
from common.schemas import NotificationStatus
from common.store import Database, Notification
from notifier.config import NotifierSettings
from notifier.service import IN_FLIGHT, Notifier
from tests.security.webhook_receivers import bad_receiver, good_receiver
from worker.jobstate import JobStore

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"poison-test-signing-secret-0001").decode()
SETTLE_S = 120.0  # an upper bound to wait for, never a timing assertion


async def finished_job(db: Database, notify: Any, tenant: str = "t") -> str:
    job, _ = await create_job(
        db,
        tenant=tenant,
        text="doc. " * 5,
        max_summary_tokens=None,
        language="auto",
        notify=notify,
        metadata=None,
        idempotency_key=None,
    )
    w = JobStore(db, "w", 30)
    assert await w.claim(job.id)
    assert await w.succeed(job.id, f"Summary of {job.id}.", 2)
    return job.id


def event(job_id: str) -> bytes:
    ev = {"event_id": f"{job_id}:succeeded", "job_id": job_id, "type": "job.succeeded", "at": datetime.now(UTC)}
    return kafka.dumps(ev)


async def rows(db: Database) -> dict[tuple[str, str], Notification]:
    async with db.session() as s:
        return {(n.job_id, n.channel): n for n in (await s.execute(select(Notification))).scalars()}


def mails_for(maildir: Path, job_id: str) -> list[email.message.Message]:
    found = [email.message_from_bytes(p.read_bytes()) for p in maildir.glob("*.eml")]
    return [m for m in found if m["X-Precis-Job-Id"] == job_id]


async def wait_until(check, what) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_S
    while not await check():
        assert loop.time() < deadline, f"not reached within {SETTLE_S:.0f}s: {what() if callable(what) else what}"
        await asyncio.sleep(0.2)


async def test_poisoned_events_fail_alone_and_the_notifier_stays_up(db, kafka_broker, smtp_sink):
    smtp_port, maildir = smtp_sink
    async with good_receiver({"t": SECRET}) as good, bad_receiver() as bad:
        s = NotifierSettings(
            env="test",
            kafka_bootstrap_servers=kafka_broker,
            group_id=f"poison-{uuid.uuid4().hex[:8]}",
            smtp_port=smtp_port,
            webhook_secrets=json.dumps({"t": [SECRET]}),
            webhook_allow_cidrs=["127.0.0.1/32"],
            webhook_allowed_ports=[good.port, bad.port],
            webhook_timeout_s=1.5,
            webhook_retry_schedule_s=[0, 0.3],
            email_retry_schedule_s=[0, 0.3],
            retry_poll_s=0.2,
            notify_concurrency=4,
        )
        await kafka.ensure_topics(s)

        good_jobs = {}
        for i in range(3):
            good_jobs[f"hook-{i}"] = await finished_job(db, {"webhook_url": good.url(f"hook-{i}")})
        good_jobs["mail"] = await finished_job(db, {"email": "reader@example.com"})
        good_jobs["both"] = await finished_job(db, {"email": "both@example.com", "webhook_url": good.url("both")})
        # the answer is 200 (delivered), its endless body is simply not read
        good_jobs["huge"] = await finished_job(db, {"webhook_url": bad.url("huge")})

        poisoned = {
            # stored before validation existed: httpx cannot even parse it
            "long-url": ({"webhook_url": good.url("x" * 70_000)}, "webhook", "refused: webhook URL is 70"),
            "not-a-string": ({"webhook_url": 12345}, "webhook", "not a string"),
            "header-injection": ({"email": "x@example.com\r\nBcc: victim@example.com"}, "email", "ValueError"),
            "hang": ({"webhook_url": bad.url("hang")}, "webhook", "gave up after 2 attempts: timed out after 1.5s"),
            "trickle": ({"webhook_url": bad.url("trickle")}, "webhook", "gave up after 2 attempts: timed out"),
            "error": (
                {"webhook_url": bad.url("error")},
                "webhook",
                "gave up after 2 attempts: receiver answered HTTP 500",
            ),
        }
        poisoned_jobs = {name: await finished_job(db, notify) for name, (notify, _, _) in poisoned.items()}
        no_notify_object = await finished_job(db, ["not", "an", "object"])

        n = Notifier(s, db, httpx.AsyncClient(follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=0)))
        runner = asyncio.create_task(n.run())
        raw = AIOKafkaProducer(bootstrap_servers=kafka_broker, acks="all")
        await raw.start()
        offsets: dict[TopicPartition, int] = {}
        try:
            order = [
                *(poisoned_jobs[k] for k in ("hang", "trickle")),
                good_jobs["hook-0"],
                poisoned_jobs["long-url"],
                good_jobs["mail"],
                poisoned_jobs["not-a-string"],
                good_jobs["hook-1"],
                poisoned_jobs["header-injection"],
                no_notify_object,
                good_jobs["both"],
                poisoned_jobs["error"],
                good_jobs["huge"],
                good_jobs["hook-2"],
            ]
            for job_id in order:
                md = await raw.send_and_wait(kafka.EVENTS, event(job_id), key=job_id.encode())
                offsets[TopicPartition(md.topic, md.partition)] = md.offset
            # events that name no notification at all: garbage, a tombstone, an unknown job
            for value in (b"\xff{not json", None, event(str(uuid.uuid4())), b'{"event_id": 1}'):
                md = await raw.send_and_wait(kafka.EVENTS, value, key=b"poison")
                offsets[TopicPartition(md.topic, md.partition)] = md.offset

            async def settled() -> bool:
                r = await rows(db)
                keys = [(j, "webhook") for k, j in good_jobs.items() if k != "mail"] + [
                    (good_jobs["mail"], "email"),
                    (good_jobs["both"], "email"),
                ]
                keys += [(poisoned_jobs[k], ch) for k, (_, ch, _) in poisoned.items()]
                unsettled[:] = [(k, r[k].status.value, r[k].detail) if k in r else (k, "no row") for k in keys]
                unsettled[:] = [u for u in unsettled if u[1] != "sent" and u[1] != "failed"]
                return not unsettled

            unsettled: list[tuple] = []
            await wait_until(settled, lambda: f"every notification settled; not: {unsettled}")
            assert not runner.done() and n.running

            # the notifier keeps consuming: one more good event after all the poison
            late = await finished_job(db, {"webhook_url": good.url("late")})
            md = await raw.send_and_wait(kafka.EVENTS, event(late), key=late.encode())
            offsets[TopicPartition(md.topic, md.partition)] = md.offset

            async def late_sent() -> bool:
                r = (await rows(db)).get((late, "webhook"))
                return r is not None and r.status == NotificationStatus.sent

            await wait_until(late_sent, "the event after the poison delivered")

            # every offset is committed once the outcomes are durable
            assert n.loop is not None

            async def committed() -> bool:
                for tp, last in offsets.items():
                    c = await n.loop.consumer.committed(tp)
                    if c is None or c <= last:
                        return False
                return True

            await wait_until(committed, "offsets committed past every event")
            assert not runner.done() and n.running
        finally:
            await raw.stop()
            n.stopping.set()
            await asyncio.wait_for(runner, 60)
            await n.http.aclose()

        r = await rows(db)
        for key in ("hook-0", "hook-1", "hook-2", "both"):
            assert r[(good_jobs[key], "webhook")].status == NotificationStatus.sent, key
            (d,) = good.at(key)
            assert d.verified_by == ["t"], key
            assert f"Summary of {good_jobs[key]}.".encode() in d.body
        assert r[(good_jobs["huge"], "webhook")].status == NotificationStatus.sent
        assert r[(late, "webhook")].status == NotificationStatus.sent
        for key in ("mail", "both"):
            assert r[(good_jobs[key], "email")].status == NotificationStatus.sent
            assert len(mails_for(maildir, good_jobs[key])) == 1
        for name, (_, channel, reason) in poisoned.items():
            row = r[(poisoned_jobs[name], channel)]
            assert row.status == NotificationStatus.failed, (name, row.detail)
            assert row.detail and reason in row.detail and not row.detail.startswith(IN_FLIGHT), (name, row.detail)
        assert mails_for(maildir, poisoned_jobs["header-injection"]) == []
        assert r[(poisoned_jobs["hang"], "webhook")].attempts == 2 and bad.hits["hang"] == 2
        assert r[(poisoned_jobs["error"], "webhook")].attempts == 2 and bad.hits["error"] == 2
        assert not any(j == no_notify_object for j, _ in r)
