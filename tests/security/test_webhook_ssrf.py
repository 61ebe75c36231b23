"""SSRF guard for webhook URLs (issue #14 item 1): the submit-time matrix (through the schema, as
the gateway and async_svc validate), the send-time resolve step with an injected resolver, the
pinned request, and a refused delivery ending the notification ``failed``. Nothing here sends
traffic: the public URLs are only validated."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from common.schemas import Notify
from common.webhook_url import (
    MAX_WEBHOOK_URL_LENGTH,
    WebhookPolicy,
    WebhookUrlError,
    check_url,
    pinned_request_args,
    resolve_checked,
)
from notifier.channels import WebhookStatusError, send_webhook
from notifier.config import NotifierSettings, dev_webhook_secret

SECRETS = (SecretStr(dev_webhook_secret("acme")),)  # the tenant's signing secrets

# (url, what the refusal must say)
REFUSED = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://localhost/hook", "local or internal name"),
    ("http://api.localhost/hook", "local or internal name"),
    ("http://[::1]/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "embeds 127.0.0.1"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata endpoint"),
    ("http://metadata.google.internal/computeMetadata/v1/", "local or internal name"),
    ("http://[fd00:ec2::254]/latest", "cloud metadata endpoint"),
    ("http://10.0.0.1/hook", "private"),
    ("http://172.16.5.4/hook", "private"),
    ("http://172.31.255.255/hook", "private"),
    ("http://192.168.1.1/hook", "private"),
    ("http://100.64.0.1/hook", "CGNAT"),
    ("http://0/hook", "unspecified"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://2130706433/hook", "loopback"),
    ("http://0x7f000001/hook", "loopback"),
    ("http://127.1/hook", "loopback"),
    ("http://0177.0.0.1/hook", "loopback"),
    ("http://[fd00::1]/hook", "private"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://240.0.0.1/hook", "reserved"),
    ("http://user@127.0.0.1/hook", "credentials"),
    ("https://user:pw@example.com/hook", "credentials"),
    ("https://example.com:22/hook", "port 22 is not allowed"),
    ("http://example.com:6379/hook", "port 6379 is not allowed"),
    ("https://redis/hook", "single-label"),
    ("http://kafka.default.svc.cluster.local/hook", "local or internal name"),
    ("ftp://example.com/hook", "http"),
    ("file:///etc/passwd", "http"),
    ("https://example.com/" + "a" * 65_536, f"the limit is {MAX_WEBHOOK_URL_LENGTH}"),
    ("http://[64:ff9b::7f00:1]/hook", "embeds 127.0.0.1"),
]

ACCEPTED = [
    "https://example.com/hook",
    "https://hooks.example.org/a/b?c=d",
    "http://example.net/hook",
    "https://8.8.8.8/hook",
    "https://[2606:4700:4700::1111]/hook",
    "https://example.com:443/hook",
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_refused_at_submit_with_a_clear_reason(url: str, reason: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Notify(webhook_url=url)  # type: ignore[arg-type]
    assert reason in str(exc.value), str(exc.value)


@pytest.mark.parametrize("url", ACCEPTED)
def test_public_urls_accepted_at_submit(url: str) -> None:
    assert Notify(webhook_url=url).webhook_url is not None  # type: ignore[arg-type]


def test_the_guard_itself_refuses_the_raw_forms_too() -> None:
    # send time sees the stored string; these spellings must fail without pydantic's normalising
    for raw in ("http://2130706433/", "http://0x7f000001/", "http://127.1/", "http://0/", "http://[::ffff:7f00:1]/"):
        with pytest.raises(WebhookUrlError):
            check_url(raw)


def test_operator_allowlist_admits_an_in_cluster_receiver() -> None:
    p = WebhookPolicy(
        allow_hosts=("hooks.internal",),
        allow_networks=(ipaddress.ip_network("10.0.0.0/8"),),
        allowed_ports=(443, 8080),
    )
    assert check_url("http://10.1.2.3:8080/h", p).ip == ipaddress.ip_address("10.1.2.3")
    assert check_url("https://hooks.internal/h", p).host == "hooks.internal"
    with pytest.raises(WebhookUrlError, match="loopback"):
        check_url("http://127.0.0.1:8080/h", p)


def fake_resolver(table: dict[str, list[str]]):
    async def resolve(host: str, port: int) -> Sequence[str]:
        return table[host]

    return resolve


async def test_a_name_resolving_to_loopback_is_refused_at_send() -> None:
    resolver = fake_resolver({"rebind.example.com": ["127.0.0.1"]})
    assert check_url("https://rebind.example.com/h")  # statically fine
    with pytest.raises(WebhookUrlError, match="resolves to 127.0.0.1, which is a loopback"):
        await resolve_checked("https://rebind.example.com/h", resolver=resolver)


async def test_any_forbidden_address_among_several_refuses() -> None:
    resolver = fake_resolver({"mixed.example.com": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(WebhookUrlError, match="10.0.0.7"):
        await resolve_checked("https://mixed.example.com/h", resolver=resolver)


async def test_the_request_is_pinned_to_the_checked_address() -> None:
    resolver = fake_resolver({"hooks.example.com": ["93.184.216.34"]})
    checked, ip = await resolve_checked("https://hooks.example.com/a?b=1", resolver=resolver)
    url, headers, ext = pinned_request_args(checked, ip)
    assert url.host == "93.184.216.34" and url.path == "/a" and url.query == b"b=1"
    assert headers["host"] == "hooks.example.com" and headers["connection"] == "close"
    assert ext == {"sni_hostname": "hooks.example.com"}  # TLS SNI + cert check on the name


async def test_send_webhook_connects_to_the_pinned_address_only() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204, stream=httpx.ByteStream(b""))  # streamed, as a server's answer

    s = NotifierSettings(env="test")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        await send_webhook(
            s,
            http,
            "https://hooks.example.com/h",
            "e1",
            b"{}",
            SECRETS,
            fake_resolver({"hooks.example.com": ["93.184.216.34"]}),
        )
        with pytest.raises(WebhookUrlError):
            await send_webhook(
                s,
                http,
                "https://evil.example.com/h",
                "e2",
                b"{}",
                SECRETS,
                fake_resolver({"evil.example.com": ["127.0.0.1"]}),
            )
    [req] = seen
    assert req.url.host == "93.184.216.34" and req.headers["host"] == "hooks.example.com"
    assert req.extensions["sni_hostname"] == "hooks.example.com"


async def test_a_redirect_is_not_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "http://127.0.0.1/"}, stream=httpx.ByteStream(b""))

    s = NotifierSettings(env="test")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=True) as http:
        with pytest.raises(WebhookStatusError, match="302"):  # refused as it is, not followed
            await send_webhook(s, http, "https://8.8.8.8/h", "e", b"{}", SECRETS)


# ---- the notifier: a refused delivery ends `failed` with the reason, never raises ----------------


@pytest.fixture
async def db(tmp_path):
    import asyncio

    from common.migrate import upgrade
    from common.store import Database

    url = f"sqlite+aiosqlite:///{tmp_path / 'precis.db'}"
    await asyncio.to_thread(upgrade, url)
    d = Database(url)
    yield d
    await d.close()


@pytest.mark.parametrize("url", ["https://rebind.example.com/hook", "http://127.0.0.1/hook"])
async def test_a_refused_webhook_ends_the_notification_failed(db, url: str) -> None:
    from datetime import UTC, datetime

    from async_svc.jobs import create_job
    from common import kafka
    from common.schemas import NotificationStatus
    from common.store import Notification
    from notifier.service import Notifier
    from worker.jobstate import JobStore

    # stored as it is (a job accepted before the guard existed, or a name that rebinds later)
    job, _ = await create_job(
        db,
        tenant="t",
        text="doc. " * 5,
        max_summary_tokens=None,
        language="auto",
        notify={"webhook_url": url},
        metadata=None,
        idempotency_key=None,
    )
    w = JobStore(db, "w", 30)
    assert await w.claim(job.id)
    assert await w.succeed(job.id, "A summary.", 1)
    event = kafka.dumps(
        {
            "event_id": f"{job.id}:succeeded",
            "job_id": job.id,
            "type": "job.succeeded",
            "at": datetime.now(UTC).isoformat(),
        }
    )
    calls: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(204))
    async with httpx.AsyncClient(transport=transport) as http:
        n = Notifier(
            NotifierSettings(env="test", send_attempts=3),
            db,
            http,
            fake_resolver({"rebind.example.com": ["127.0.0.1"]}),
        )
        await n.handle(event)  # does not raise
    async with db.session() as s:
        row = await s.get(Notification, (job.id, "webhook"))
    assert row is not None and row.status == NotificationStatus.failed
    assert row.attempts == 1  # a refusal is permanent: not retried
    assert row.detail is not None and row.detail.startswith("refused: ") and "loopback" in row.detail
    assert calls == []  # nothing was sent
