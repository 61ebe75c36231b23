"""Delivery channels: email (aiosmtplib) and Standard Webhooks (httpx, HMAC-SHA256 signature)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import aiosmtplib
import httpx

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


def sign_webhook(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks v1 signature: base64(HMAC-SHA256(key, f"{id}.{ts}.{body}"))."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def webhook_payload(event_type: str, job: dict[str, Any]) -> bytes:
    data = {k: job.get(k) for k in ("id", "status", "summary", "error", "finished_at")}
    return json.dumps(
        {"type": event_type, "timestamp": job.get("finished_at"), "data": data}, separators=(",", ":"), default=str
    ).encode()


async def send_webhook(
    s: NotifierSettings,
    http: httpx.AsyncClient,
    url: str,
    event_id: str,
    body: bytes,
    resolver: Resolver | None = None,
) -> None:
    """Checks the URL again (WebhookUrlError: not retried), resolves it, refuses it if any address
    is forbidden, and posts to the checked address (pinned: no second lookup), no redirects."""
    checked, ip = await resolve_checked(url, s.webhook_policy, resolver)
    target, pin_headers, extensions = pinned_request_args(checked, ip)
    ts = int(time.time())
    headers = {
        **pin_headers,
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_webhook(s.webhook_secret.get_secret_value(), event_id, ts, body),
    }
    resp = await http.post(
        target,
        content=body,
        headers=headers,
        timeout=s.webhook_timeout_s,
        follow_redirects=False,
        extensions=extensions,
    )
    if resp.status_code >= 300:
        raise httpx.HTTPStatusError(f"webhook answered {resp.status_code}", request=resp.request, response=resp)
