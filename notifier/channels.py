"""Delivery channels: email (aiosmtplib) and Standard Webhooks (httpx; signed by the
``standardwebhooks`` library, one signature per secret of the tenant)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import aiosmtplib
import httpx
from pydantic import SecretStr
from standardwebhooks import Webhook

from common.schemas import JobStatus
from common.webhook_url import Resolver, pinned_request_args, resolve_checked
from notifier.config import NotifierSettings


def build_email(s: NotifierSettings, *, to: str, job: dict[str, Any], event_id: str) -> EmailMessage:
    msg = EmailMessage()
    status = job["status"]
    msg["From"] = s.smtp_from
    msg["To"] = to
    msg["Subject"] = f"Your Précis summary {'is ready' if status == JobStatus.succeeded else status}: {job['id']}"
    msg["Date"] = formatdate(usegmt=True)
    # Deterministic Message-ID: a redelivered event produces the same message, which mail systems
    # can deduplicate even in the crash window between "sent" and "recorded".
    msg["Message-ID"] = f"<{event_id.replace(':', '.')}@precis>"
    msg["X-Precis-Job-Id"] = job["id"]
    lines = [f"Job {job['id']} finished: {status}.", ""]
    if job.get("summary"):
        lines += ["Summary:", "", job["summary"], ""]
    if job.get("error"):
        lines += [f"Error: {job['error']}", ""]
    if s.public_base_url:
        lines += [f"Status: {s.public_base_url.rstrip('/')}/v1/summaries/{job['id']}"]
    msg.set_content("\n".join(lines))
    return msg


async def send_email(s: NotifierSettings, msg: EmailMessage) -> None:
    await aiosmtplib.send(
        msg,
        hostname=s.smtp_host,
        port=s.smtp_port,
        username=s.smtp_username.get_secret_value() if s.smtp_username else None,
        password=s.smtp_password.get_secret_value() if s.smtp_password else None,
        start_tls=s.smtp_starttls,
        use_tls=s.smtp_tls,
        timeout=s.smtp_timeout_s,
    )


def sign_webhook(secrets: Sequence[SecretStr | str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value: ``v1,<sig>`` per secret, space separated
    (the spec's multi-signature form: a receiver accepts if any one verifies, which is how a secret
    is rotated). Signed by the ``standardwebhooks`` reference library."""
    if not secrets:
        raise ValueError("no signing secret")
    at = datetime.fromtimestamp(timestamp, tz=UTC)
    data = body.decode()
    return " ".join(
        Webhook(sec.get_secret_value() if isinstance(sec, SecretStr) else sec).sign(msg_id, at, data) for sec in secrets
    )


def webhook_payload(event_type: str, job: dict[str, Any]) -> bytes:
    data = {k: job.get(k) for k in ("id", "status", "summary", "error", "finished_at")}
    return json.dumps(
        {"type": event_type, "timestamp": job.get("finished_at"), "data": data}, separators=(",", ":"), default=str
    ).encode()


class WebhookStatusError(Exception):
    """The receiver answered, but not with 2xx (retried on the schedule)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"receiver answered HTTP {status}")
        self.status = status


async def send_webhook(
    s: NotifierSettings,
    http: httpx.AsyncClient,
    url: str,
    event_id: str,
    body: bytes,
    secrets: Sequence[SecretStr],
    resolver: Resolver | None = None,
) -> int:
    """Checks the URL again (WebhookUrlError: not retried), resolves it, refuses it if any address
    is forbidden, and posts to the checked address (pinned: no second lookup), no redirects.

    The whole call (lookup included) runs under one ``webhook_timeout_s`` deadline: httpx's own
    timeouts are per phase (a receiver trickling a byte a second never trips them). The answer is
    streamed and at most ``webhook_max_response_bytes`` of it read: only the status matters.
    Returns the status; raises WebhookStatusError for a non-2xx one, TimeoutError past the deadline."""
    async with asyncio.timeout(s.webhook_timeout_s):
        checked, ip = await resolve_checked(url, s.webhook_policy, resolver)
        target, pin_headers, extensions = pinned_request_args(checked, ip)
        ts = int(time.time())
        headers = {
            **pin_headers,
            "content-type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign_webhook(secrets, event_id, ts, body),
        }
        request = http.build_request(
            "POST", target, content=body, headers=headers, timeout=s.webhook_timeout_s, extensions=extensions
        )
        resp = await http.send(request, stream=True, follow_redirects=False)
        try:
            read = 0
            async for chunk in resp.aiter_raw():
                read += len(chunk)
                if read >= s.webhook_max_response_bytes:
                    break  # enough: the rest is never read (the connection is closed below)
        finally:
            await resp.aclose()
    if not 200 <= resp.status_code < 300:
        raise WebhookStatusError(resp.status_code)
    return resp.status_code
