"""Event consumer: one notification per (job, channel), deduplicated in the store.

No event can stop the notifier (issue #14 item 2):

* An event is handled in two steps. The first attempt runs while its Kafka record is handled; its
  outcome (``sent``, ``failed``, or ``pending`` with the next attempt due) is committed to the
  store before the record's offset (common/consumer.py commits after the handler returns).
* Whatever one delivery raises (a URL httpx cannot parse, a payload that does not encode, a
  receiver that hangs, trickles or streams forever) ends that notification only: the attempt is
  bounded by a total deadline and a capped read (notifier/channels.py), and any exception it
  raises becomes the row's outcome, ``failed`` with a readable reason unless it is retryable. Only
  the store being unreachable fails the handler (the records are then redelivered).
* Deliveries run concurrently, at most ``notify_concurrency`` at once (first attempts of every
  partition and retries together).
* Retries follow a schedule (Standard Webhooks' for webhooks) and are durable: the row itself is
  the schedule. A ``pending`` row with ``attempts = k`` whose last change (``updated_at``) is
  ``schedule[k]`` seconds old is due; :meth:`Notifier.retry_due` claims due rows with a
  conditional UPDATE (so two replicas never send the same attempt) and delivers them. Deriving the
  due time from ``updated_at`` needs no new column (no migration). While an attempt runs its row's
  ``detail`` says so (``IN_FLIGHT``) and acts as a lease: such a row is only taken over (its
  process died) once the longest call could no longer be running. A restart therefore loses
  nothing: every accepted notification is a row, and every pending row becomes due.

Why not the worker's retry topic: its messages wait in the consumer (``JobMessage.not_before``),
which is right for a job retry seconds to minutes away, but Standard Webhooks' schedule reaches
10 hours, and one waiting message would hold back every later message of its partition.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosmtplib
import httpx
from aiokafka import ConsumerRecord, TopicPartition
from fastapi import FastAPI
from prometheus_client import Counter, Gauge
from pydantic import SecretStr
from sqlalchemy import and_, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql.elements import ColumnElement

from common import kafka
from common.consumer import ConsumerLoop
from common.health import consumer_health_app
from common.logs import setup_logging
from common.schemas import JobEvent, JobStatus, NotificationStatus
from common.serve import health_server
from common.store import Database, Job, Notification
from common.webhook_url import Resolver, WebhookUrlError
from notifier.channels import WebhookStatusError, build_email, send_email, send_webhook, webhook_payload
from notifier.config import NotifierSettings, get_settings

log = logging.getLogger(__name__)

SENT = Counter("precis_notifications_total", "Notifications by channel and outcome", ["channel", "outcome"])
IN_FLIGHT_GAUGE = Gauge("precis_notifier_deliveries_in_flight", "Delivery attempts running now")
# Failures worth another attempt later; anything else a delivery raises is permanent.
RETRYABLE = (aiosmtplib.SMTPException, OSError, httpx.TransportError, WebhookStatusError, TimeoutError)
# How long SIGTERM lets running deliveries finish; the rest are retried from the store.
DRAIN_TIMEOUT_S = 30.0
# ``notifications.detail`` while an attempt runs: the row is leased to the process running it.
IN_FLIGHT = "in flight: attempt "
# A leased row is taken over this long after the longest call's deadline (its process died).
LEASE_GRACE_S = 30.0
MAX_DETAIL = 500
CHANNELS = ("email", "webhook")


class Permanent(Exception):
    """A delivery that no retry can fix (the message is the row's reason)."""


@dataclass(frozen=True)
class Target:
    job_id: str
    tenant: str
    channel: str
    address: Any  # from jobs.notify: checked when used (a row may predate the validation)
    event_id: str
    event_type: str
    view: dict[str, Any]


def reason_of(exc: BaseException, timeout_s: float = 0.0) -> str:
    """The row's ``detail``: what went wrong, in words (never a traceback)."""
    if isinstance(exc, WebhookUrlError):
        text = f"refused: {exc}"
    elif isinstance(exc, TimeoutError):
        text = f"timed out after {timeout_s:g}s (whole call)"
    elif isinstance(exc, Permanent | WebhookStatusError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_DETAIL]


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, WebhookUrlError | Permanent):
        return False
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused | aiosmtplib.SMTPSenderRefused):
        return False  # the server refused the address itself (5xx): the same answer next time
    return isinstance(exc, RETRYABLE)


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
        self.slots = asyncio.Semaphore(s.notify_concurrency)
        self.retries: dict[tuple[str, str], asyncio.Task] = {}  # scheduled attempts running here
        self.scheduler: asyncio.Task | None = None
        self.schedules = {"webhook": tuple(s.webhook_retry_schedule_s), "email": tuple(s.email_retry_schedule_s)}
        self.lease = timedelta(seconds=max(s.webhook_timeout_s, s.smtp_timeout_s) + LEASE_GRACE_S)

    @property
    def running(self) -> bool:
        consuming = self.loop is not None and self.loop.running
        return consuming and self.scheduler is not None and not self.scheduler.done()

    # ---- events --------------------------------------------------------------------------------

    async def handle(self, raw: bytes | None) -> None:
        """One event: the first attempt of each of its channels, concurrently. Returns once every
        outcome is in the store; raises only when the store is unreachable."""
        try:
            ev = JobEvent.model_validate(kafka.loads(raw or b""))
            if len(ev.event_id) > 64:
                raise ValueError(f"event_id is {len(ev.event_id)} characters; the limit is 64")
        except Exception as exc:  # noqa: BLE001 - a poison pill: nothing to retry
            log.error("dropping malformed event: %s", reason_of(exc))
            return
        job = await self._load_job(ev.job_id)
        if job is None:
            return
        try:
            targets = self._targets(job, ev.event_id, ev.type)
        except Exception as exc:  # noqa: BLE001 - an unreadable row settles nothing else
            log.error("job %s: cannot read its notify settings (%s); no notification", ev.job_id, reason_of(exc))
            return
        async with asyncio.TaskGroup() as tg:
            for t in targets:
                tg.create_task(self._first_attempt(t))

    async def handle_batch(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        # Every record at once (bounded by self.slots); the offset moves once all are settled.
        async with asyncio.TaskGroup() as tg:
            for rec in records:
                tg.create_task(self.handle(rec.value))

    async def _load_job(self, job_id: str) -> Any:
        # The columns a notification needs (never the document, nor params, whose validation a
        # legacy row could fail).
        q = select(Job.id, Job.tenant, Job.status, Job.summary, Job.error_detail, Job.finished_at, Job.notify).where(
            Job.id == job_id
        )
        async with self.db.session() as s:
            return (await s.execute(q)).one_or_none()

    def _targets(self, job: Any, event_id: str, event_type: str) -> list[Target]:
        if not job.notify:
            return []
        if not isinstance(job.notify, dict):
            raise ValueError(f"jobs.notify is a {type(job.notify).__name__}, not an object")
        view = {
            "id": job.id,
            "status": job.status.value,
            "summary": job.summary,
            "error": job.error_detail if job.status == JobStatus.failed else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        }
        keys = {"email": "email", "webhook": "webhook_url"}
        return [
            Target(job.id, job.tenant, ch, job.notify[keys[ch]], event_id, event_type, view)
            for ch in CHANNELS
            if job.notify.get(keys[ch])
        ]

    async def _first_attempt(self, t: Target) -> None:
        if not await self._claim_new(t):
            SENT.labels(t.channel, "duplicate_skipped").inc()
            return
        await self._attempt(t, 1)

    async def _claim_new(self, t: Target) -> bool:
        """Insert the row, leased to this first attempt. False if it exists (a redelivery: the row
        is settled, or pending and then the scheduler's)."""
        try:
            async with self.db.transaction() as s:
                if await s.get(Notification, (t.job_id, t.channel)) is not None:
                    return False
                s.add(
                    Notification(
                        job_id=t.job_id,
                        channel=t.channel,
                        event_id=t.event_id,
                        status=NotificationStatus.pending,
                        attempts=1,
                        detail=IN_FLIGHT + "1",
                        updated_at=_now(),
                    )
                )
        except sa_exc.IntegrityError:
            return False  # inserted meanwhile by another replica (a rebalance)
        return True

    # ---- one attempt ---------------------------------------------------------------------------

    async def _attempt(self, t: Target, n: int) -> None:
        """Attempt ``n`` of the row (already counted and leased): deliver, then record the outcome."""
        async with self.slots:
            IN_FLIGHT_GAUGE.inc()
            try:
                await self._deliver(t)
                error: Exception | None = None
            except Exception as exc:  # noqa: BLE001 - every failure is this notification's outcome
                error = exc
            finally:
                IN_FLIGHT_GAUGE.dec()
        await self._record(t, n, error)

    async def _deliver(self, t: Target) -> None:
        if not isinstance(t.address, str):
            raise Permanent(f"notify target is a {type(t.address).__name__}, not a string")
        if t.channel == "email":
            msg = build_email(self.s, to=t.address, job=t.view, event_id=t.event_id)
            # aiosmtplib's timeout is per command; this one bounds the whole conversation
            async with asyncio.timeout(self.s.smtp_timeout_s):
                await send_email(self.s, msg)
            return
        secrets: Sequence[SecretStr] = self.s.webhook_secrets_for(t.tenant)
        if not secrets:
            raise Permanent(f"no webhook signing secret is configured for tenant {t.tenant!r} (PRECIS_WEBHOOK_SECRETS)")
        body = webhook_payload(t.event_type, t.view)
        await send_webhook(self.s, self.http, t.address, t.event_id, body, secrets, self.resolver)

    async def _record(self, t: Target, n: int, error: Exception | None) -> None:
        schedule = self.schedules[t.channel]
        if error is None:
            status, detail, outcome = NotificationStatus.sent, None, "sent"
        else:
            timeout_s = self.s.smtp_timeout_s if t.channel == "email" else self.s.webhook_timeout_s
            reason = reason_of(error, timeout_s)
            if not is_retryable(error):
                status, detail, outcome = NotificationStatus.failed, reason, "failed"
            elif n >= len(schedule):
                status, detail, outcome = NotificationStatus.failed, f"gave up after {n} attempts: {reason}", "failed"
            else:
                wait = schedule[n]
                status, detail, outcome = NotificationStatus.pending, f"attempt {n} failed: {reason}", "retry"
                log.warning("%s for job %s: attempt %d failed (%s); next in %gs", t.channel, t.job_id, n, reason, wait)
            if outcome == "failed":
                log.warning("%s for job %s failed after %d attempt(s): %s", t.channel, t.job_id, n, detail)
        async with self.db.transaction() as s:
            # Only while the lease is ours (attempts still n): a row taken over meanwhile keeps
            # the newer attempt's outcome.
            await s.execute(
                update(Notification)
                .where(*_row(t.job_id, t.channel), Notification.attempts == n)
                .values(status=status, detail=detail[:MAX_DETAIL] if detail else None, updated_at=_now())
            )
        SENT.labels(t.channel, outcome).inc()
        if outcome == "sent":
            log.info("%s sent for job %s (%s, attempt %d)", t.channel, t.job_id, t.event_type, n)

    # ---- the retry schedule --------------------------------------------------------------------

    def _due(self, now: datetime) -> ColumnElement[bool]:
        """Rows whose next attempt is due: ``attempts = k`` and idle for ``schedule[k]``, or leased
        (in flight) for longer than any attempt runs."""
        in_flight = Notification.detail.like(IN_FLIGHT + "%")
        idle = or_(Notification.detail.is_(None), ~Notification.detail.like(IN_FLIGHT + "%"))
        clauses = []
        for channel, schedule in self.schedules.items():
            for k in range(len(schedule) + 1):
                wait = timedelta(seconds=schedule[k] if k < len(schedule) else 0)
                clauses.append(
                    and_(
                        Notification.channel == channel,
                        Notification.attempts == k,
                        or_(
                            and_(idle, Notification.updated_at <= now - wait),
                            and_(in_flight, Notification.updated_at <= now - max(wait, self.lease)),
                        ),
                    )
                )
            # beyond the schedule (it was shortened): settle at once, or once the lease is over
            clauses.append(
                and_(
                    Notification.channel == channel,
                    Notification.attempts > len(schedule),
                    or_(idle, Notification.updated_at <= now - self.lease),
                )
            )
        return and_(Notification.status == NotificationStatus.pending, or_(*clauses))

    async def retry_due(self) -> int:
        """Claim and start the attempts that are due, as many as there are free slots; returns how
        many were started or settled."""
        free = self.s.notify_concurrency - len(self.retries)
        if free <= 0:
            return 0
        now = _now()
        q = (
            select(
                Notification.job_id,
                Notification.channel,
                Notification.attempts,
                Notification.updated_at,
                Notification.event_id,
            )
            .where(self._due(now))
            .order_by(Notification.updated_at)
            .limit(free)
        )
        async with self.db.session() as s:
            rows = (await s.execute(q)).all()
        started = 0
        for row in rows:
            key = (row.job_id, row.channel)
            if key in self.retries or row.channel not in self.schedules:
                continue
            n = row.attempts + 1
            exhausted = row.attempts >= len(self.schedules[row.channel])
            async with self.db.transaction() as s:
                claimed = await s.execute(
                    update(Notification)
                    .where(
                        *_row(row.job_id, row.channel),
                        Notification.attempts == row.attempts,
                        Notification.updated_at == row.updated_at,
                    )
                    .values(
                        **(
                            {
                                "status": NotificationStatus.failed,
                                "detail": f"gave up after {row.attempts} attempts (the last was interrupted)",
                            }
                            if exhausted
                            else {"attempts": n, "detail": IN_FLIGHT + str(n)}
                        ),
                        updated_at=_now(),
                    )
                )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                continue  # another replica took it
            started += 1
            if exhausted:  # its last attempt was interrupted (the process died)
                SENT.labels(row.channel, "failed").inc()
                continue
            task = asyncio.create_task(self._retry(row.job_id, row.channel, row.event_id, n), name=f"retry-{key}")
            self.retries[key] = task
            task.add_done_callback(functools.partial(self._retry_done, key))
        return started

    def _retry_done(self, key: tuple[str, str], _task: asyncio.Task) -> None:
        self.retries.pop(key, None)

    async def _retry(self, job_id: str, channel: str, event_id: str, n: int) -> None:
        try:
            job = await self._load_job(job_id)
            if job is None:
                return  # deleted with its notifications (ON DELETE CASCADE)
            try:
                targets = [t for t in self._targets(job, event_id, f"job.{job.status.value}") if t.channel == channel]
                if not targets:
                    raise Permanent(f"the job no longer has a {channel} target")
            except Exception as exc:  # noqa: BLE001 - settle this row, whatever is wrong with it
                t = Target(job_id, job.tenant, channel, None, event_id, "", {})
                await self._record(t, n, exc if isinstance(exc, Permanent) else Permanent(reason_of(exc)))
                return
            await self._attempt(targets[0], n)
        except Exception as exc:  # noqa: BLE001 - a store blip: the lease expires, the row is retried
            log.warning("retry of %s for job %s not recorded (%s); retried later", channel, job_id, exc)

    async def _schedule_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                await self.retry_due()
            except Exception as exc:  # noqa: BLE001 - the store is away: look again next period
                log.warning("retry scan failed: %s", exc)
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=self.s.retry_poll_s)
            except TimeoutError:
                pass

    async def _drain_retries(self) -> None:
        tasks = list(self.retries.values())
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT_S)
        for t in late:
            t.cancel()  # its row stays leased; the lease expires and it is retried
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- the process ---------------------------------------------------------------------------

    async def run(self) -> None:
        consumer = kafka.make_consumer(self.s, group_id=self.s.group_id, client_id="notifier", max_poll_records=50)
        self.loop = ConsumerLoop(
            consumer, [kafka.EVENTS], self.handle_batch, drain_timeout_s=DRAIN_TIMEOUT_S, stopping=self.stopping
        )
        self.scheduler = asyncio.create_task(self._schedule_loop(), name="notify-retries")
        try:
            await self.loop.run()
        finally:
            self.stopping.set()
            await self.scheduler
            await self._drain_retries()


def _now() -> datetime:
    return datetime.now(UTC)


def _row(job_id: str, channel: str) -> tuple[ColumnElement[bool], ...]:
    return (
        Notification.job_id == job_id,
        Notification.channel == channel,
        Notification.status == NotificationStatus.pending,
    )


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
