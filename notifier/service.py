"""Event consumer: one notification per (job, channel), deduplicated in the store, retried with
backoff. The Kafka loop is common/consumer.py's (the worker's too): offsets are committed, with
retries, after the outcome is recorded; a redelivery is harmless (deduplicated)."""

from __future__ import annotations

import asyncio
import logging
import signal

import aiosmtplib
import httpx
from aiokafka import ConsumerRecord, TopicPartition
from fastapi import FastAPI
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy import select
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from common import kafka
from common.consumer import ConsumerLoop
from common.health import consumer_health_app
from common.logs import setup_logging
from common.schemas import JobEvent, JobStatus, NotificationStatus
from common.serve import health_server
from common.store import Database, Job, Notification
from common.webhook_url import Resolver, WebhookUrlError
from notifier.channels import build_email, send_email, send_webhook, webhook_payload
from notifier.config import NotifierSettings, get_settings

log = logging.getLogger(__name__)

SENT = Counter("precis_notifications_total", "Notifications by channel and outcome", ["channel", "outcome"])
RETRYABLE = (aiosmtplib.SMTPException, OSError, httpx.HTTPError, asyncio.TimeoutError)
# How long SIGTERM lets running deliveries finish; the rest are redelivered (deduplicated).
DRAIN_TIMEOUT_S = 30.0


class Notifier:
    def __init__(
        self, s: NotifierSettings, db: Database, http: httpx.AsyncClient, resolver: Resolver | None = None
    ) -> None:
        self.s = s
        self.resolver = resolver  # webhook host lookups (None: getaddrinfo; tests inject one)
        self.db = db
        self.http = http
        self.stopping = asyncio.Event()
        self.loop: ConsumerLoop | None = None

    @property
    def running(self) -> bool:
        return self.loop is not None and self.loop.running

    async def _claim(self, job_id: str, channel: str, event_id: str) -> bool:
        """True if this (job, channel) still needs sending."""
        async with self.db.transaction() as s:
            row = await s.get(Notification, (job_id, channel))
            if row is None:
                s.add(
                    Notification(
                        job_id=job_id, channel=channel, event_id=event_id, status=NotificationStatus.pending, attempts=0
                    )
                )
                return True
            return not row.status.settled

    async def _record(
        self, job_id: str, channel: str, status: NotificationStatus, attempts: int, detail: str | None
    ) -> None:
        async with self.db.transaction() as s:
            row = await s.get(Notification, (job_id, channel))
            if row is not None:
                row.status, row.attempts, row.detail = status, row.attempts + attempts, detail

    async def handle(self, raw: bytes) -> None:
        try:
            ev = JobEvent.model_validate(kafka.loads(raw))
        except (ValidationError, ValueError) as exc:
            log.error("dropping malformed event: %s", exc)
            return
        async with self.db.session() as s:
            job = (await s.execute(select(Job).where(Job.id == ev.job_id))).scalar_one_or_none()
        if job is None or not job.notify:
            return
        view = {
            "id": job.id,
            "status": job.status.value,
            "summary": job.summary,
            "error": job.error_detail if job.status == JobStatus.failed else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        }
        targets = []
        if email := job.notify.get("email"):
            targets.append(("email", email))
        if url := job.notify.get("webhook_url"):
            targets.append(("webhook", url))
        for channel, target in targets:
            if not await self._claim(job.id, channel, ev.event_id):
                SENT.labels(channel, "duplicate_skipped").inc()
                continue
            attempts = 0
            try:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self.s.send_attempts),
                    wait=wait_exponential(multiplier=0.5, max=10),
                    retry=retry_if_exception_type(RETRYABLE),
                    reraise=True,
                ):
                    with attempt:
                        attempts += 1
                        if channel == "email":
                            await send_email(self.s, build_email(self.s, to=target, job=view, event_id=ev.event_id))
                        else:
                            await send_webhook(
                                self.s, self.http, target, ev.event_id, webhook_payload(ev.type, view), self.resolver
                            )
            except WebhookUrlError as exc:
                # refused by the SSRF guard at send time: permanent, not retried
                log.warning("webhook for job %s refused: %s", job.id, exc)
                await self._record(job.id, channel, NotificationStatus.failed, attempts, f"refused: {exc}"[:500])
                SENT.labels(channel, "refused").inc()
                continue
            except RETRYABLE as exc:
                log.warning("%s for job %s failed after %d attempts: %s", channel, job.id, attempts, exc)
                await self._record(
                    job.id, channel, NotificationStatus.failed, attempts, f"{type(exc).__name__}: {exc}"[:500]
                )
                SENT.labels(channel, "failed").inc()
                continue
            await self._record(job.id, channel, NotificationStatus.sent, attempts, None)
            SENT.labels(channel, "sent").inc()
            log.info("%s sent for job %s (%s)", channel, job.id, ev.type)

    async def handle_batch(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        for rec in records:
            await self.handle(rec.value)

    async def run(self) -> None:
        consumer = kafka.make_consumer(self.s, group_id=self.s.group_id, client_id="notifier", max_poll_records=50)
        self.loop = ConsumerLoop(
            consumer, [kafka.EVENTS], self.handle_batch, drain_timeout_s=DRAIN_TIMEOUT_S, stopping=self.stopping
        )
        await self.loop.run()


def health_app(n: Notifier) -> FastAPI:
    async def checks() -> dict[str, bool]:
        return {"consumer": n.running, "database": await n.db.ping()}

    return consumer_health_app("notifier", checks)


async def amain(s: NotifierSettings) -> None:
    db = Database(s.database_url)
    await kafka.ensure_topics(s, timeout_s=120)
    # no keep-alive: every webhook connection is pinned to the address checked for its name
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(follow_redirects=False, limits=limits) as http:
        n = Notifier(s, db, http)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, n.stopping.set)
        server = health_server(health_app(n), s.port or 8084)
        health = asyncio.create_task(server.serve())
        try:
            await n.run()
        finally:
            server.should_exit = True
            await health
            await db.close()


def main() -> None:
    s = get_settings()
    setup_logging(s.service_name, s.log_level)
    asyncio.run(amain(s))
