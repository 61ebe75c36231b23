import base64
import hashlib
import hmac

import pytest

from notifier.channels import build_email, sign_webhook, webhook_payload
from notifier.config import DEFAULT_WEBHOOK_SECRET, NotifierSettings


def test_standard_webhooks_signature_matches_reference_computation():
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef").decode()
    body = b'{"type":"job.succeeded"}'
    sig = sign_webhook(secret, "msg_1", 1700000000, body)
    expected = base64.b64encode(
        hmac.new(b"0123456789abcdef", b"msg_1.1700000000." + body, hashlib.sha256).digest()
    ).decode()
    assert sig == f"v1,{expected}"


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


def test_default_webhook_secret_refused_outside_local(monkeypatch):
    monkeypatch.setenv("PRECIS_ENV", "production")
    monkeypatch.setenv("PRECIS_DATABASE_URL", "postgresql+asyncpg://u@db/precis")
    with pytest.raises(ValueError, match="PRECIS_WEBHOOK_SECRET"):
        NotifierSettings()
    assert NotifierSettings(webhook_secret="whsec_" + base64.b64encode(b"x" * 24).decode())
    assert DEFAULT_WEBHOOK_SECRET.startswith("whsec_")
