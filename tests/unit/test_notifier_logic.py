import base64
import hashlib
import hmac
import json

import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook, WebhookVerificationError

from notifier.channels import build_email, sign_webhook, webhook_payload
from notifier.config import (
    DEFAULT_WEBHOOK_SECRET,
    STANDARD_WEBHOOKS_SCHEDULE_S,
    NotifierSettings,
    dev_webhook_secret,
)
from notifier.service import reason_of

PG = "postgresql+asyncpg://u@db/precis"


def _secret(seed: bytes) -> str:
    return "whsec_" + base64.b64encode(seed * 4).decode()


def test_standard_webhooks_signature_matches_reference_computation():
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef").decode()
    body = b'{"type":"job.succeeded"}'
    sig = sign_webhook([secret], "msg_1", 1700000000, body)
    expected = base64.b64encode(
        hmac.new(b"0123456789abcdef", b"msg_1.1700000000." + body, hashlib.sha256).digest()
    ).decode()
    assert sig == f"v1,{expected}"


def test_multi_signature_header_has_one_signature_per_secret_each_verifiable():
    import time

    new, old = _secret(b"new-secret"), _secret(b"old-secret")
    body = b'{"type":"job.succeeded"}'
    ts = int(time.time())
    header = sign_webhook([new, old], "msg_2", ts, body)
    assert len(header.split(" ")) == 2 and all(p.startswith("v1,") for p in header.split(" "))
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(ts), "webhook-signature": header}
    Webhook(new).verify(body, headers)
    Webhook(old).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(_secret(b"unrelated!")).verify(body, headers)


def test_email_contains_summary_and_deterministic_message_id():
    s = NotifierSettings(public_base_url="https://precis.example")
    job = {"id": "j1", "status": "succeeded", "summary": "The gist.", "error": None}
    m1 = build_email(s, to="a@example.com", job=job, event_id="j1:succeeded")
    m2 = build_email(s, to="a@example.com", job=job, event_id="j1:succeeded")
    assert m1["Message-ID"] == m2["Message-ID"]
    body = m1.get_content()
    assert "The gist." in body and "https://precis.example/v1/summaries/j1" in body


def test_webhook_payload_carries_job_outcome():
    p = webhook_payload("job.failed", {"id": "j", "status": "failed", "error": "boom", "summary": None})
    assert b'"type":"job.failed"' in p and b'"error":"boom"' in p


def test_secrets_are_per_tenant_with_rotation_lists():
    a1, a0, b = _secret(b"tenant-a-new"), _secret(b"tenant-a-old"), _secret(b"tenant-b-one")
    s = NotifierSettings(env="production", database_url=PG, webhook_secrets=json.dumps({"a": [a1, a0], "b": b}))
    assert [x.get_secret_value() for x in s.webhook_secrets_for("a")] == [a1, a0]
    assert [x.get_secret_value() for x in s.webhook_secrets_for("b")] == [b]
    # outside local mode a tenant without an entry gets no secret: its webhooks are refused
    assert s.webhook_secrets_for("c") == ()


def test_local_mode_derives_a_distinct_dev_secret_per_tenant():
    s = NotifierSettings(env="local")
    a, b = s.webhook_secrets_for("a"), s.webhook_secrets_for("b")
    assert a[0].get_secret_value() == dev_webhook_secret("a") != dev_webhook_secret("b") == b[0].get_secret_value()


@pytest.mark.parametrize("published", [DEFAULT_WEBHOOK_SECRET, dev_webhook_secret("a")])
def test_published_dev_secrets_refused_outside_local_mode(published):
    with pytest.raises(ValidationError, match=r"PRECIS_WEBHOOK_SECRETS\['a'\]\[0\] is a published dev secret"):
        NotifierSettings(env="production", database_url=PG, webhook_secrets=json.dumps({"a": [published]}))


@pytest.mark.parametrize(
    "raw, message",
    [
        ("{not json", "PRECIS_WEBHOOK_SECRETS is not valid JSON"),
        ('["whsec_x"]', "must be a JSON object"),
        ('{"a": []}', "must be a non-empty list"),
        ('{"a": ["plain-secret-value-1234567890"]}', "must look like whsec_"),
        ('{"a": ["whsec_!!!secret-value!!!"]}', "not valid base64"),
        ('{"a": ["whsec_c2hvcnQ="]}', "needs at least 16"),
    ],
)
def test_malformed_secrets_refused_without_printing_them(raw, message):
    with pytest.raises(ValidationError) as err:
        NotifierSettings(env="production", database_url=PG, webhook_secrets=raw)
    text = str(err.value)
    assert message in text
    for fragment in ("whsec_x", "plain-secret-value", "!!!secret-value!!!", "c2hvcnQ="):
        assert fragment not in text


def test_retry_schedule_defaults_to_standard_webhooks_and_is_configurable(monkeypatch):
    assert NotifierSettings().webhook_retry_schedule_s == [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
    assert tuple(NotifierSettings().webhook_retry_schedule_s) == STANDARD_WEBHOOKS_SCHEDULE_S
    monkeypatch.setenv("PRECIS_WEBHOOK_RETRY_SCHEDULE_S", "[0, 0.5]")
    monkeypatch.setenv("PRECIS_NOTIFY_CONCURRENCY", "7")
    s = NotifierSettings()
    assert s.webhook_retry_schedule_s == [0, 0.5] and s.notify_concurrency == 7
    with pytest.raises(ValidationError, match="retry schedule"):
        NotifierSettings(webhook_retry_schedule_s=[])
    with pytest.raises(ValidationError, match="retry schedule"):
        NotifierSettings(email_retry_schedule_s=[-1])


def test_reasons_are_readable_one_liners():
    import httpx

    assert reason_of(TimeoutError(), 2.5) == "timed out after 2.5s (whole call)"
    assert reason_of(httpx.InvalidURL("URL too long")) == "InvalidURL: URL too long"
    assert len(reason_of(ValueError("x" * 5000))) == 500
