"""Cross-tenant isolation and header injection, against the live stack that `make run` starts.

The in-process tests (tests/unit/test_*_inprocess.py) check each rule on one app; these check the
deployed path end to end: gateway → async_svc → store, with two real tenants.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.asserts import assert_problem
from tests.e2e.conftest import Stack  # the `stack` fixture: tests/security/conftest.py

SHORT = "The council voted to close the bridge for repairs next spring, after a long debate."
EVIL = "evil.example"


def _submit(stack: Stack, key: str | None = None, headers: dict[str, str] | None = None, **body) -> httpx.Response:
    body.setdefault("text", SHORT)
    body.setdefault("mode", "async")
    return httpx.post(
        f"{stack.url}/v1/summaries", json=body, headers={**stack.auth(key), **(headers or {})}, timeout=30
    )


def _cancel(stack: Stack, job_id: str, key: str | None = None) -> None:
    httpx.delete(f"{stack.url}/v1/summaries/{job_id}", headers=stack.auth(key), timeout=10)


def test_another_tenant_cannot_read_cancel_or_replay_a_job(stack: Stack) -> None:
    idem = f"tenancy-{uuid.uuid4()}"
    r = _submit(stack, headers={"Idempotency-Key": idem})
    assert r.status_code == 202, r.text
    mine = r.json()["id"]
    url = f"{stack.url}/v1/summaries/{mine}"
    unknown_url = f"{stack.url}/v1/summaries/{uuid.uuid4()}"
    try:
        # Read: exactly what an unknown id answers (body apart from `instance`, and header names).
        other, unknown = (httpx.get(u, headers=stack.auth(stack.other_key), timeout=10) for u in (url, unknown_url))
        a, b = assert_problem(other, 404, "not-found"), assert_problem(unknown, 404, "not-found")
        assert {k: v for k, v in a.items() if k != "instance"} == {k: v for k, v in b.items() if k != "instance"}
        assert sorted(other.headers.keys()) == sorted(unknown.headers.keys())
        assert mine not in other.text.replace(url.removeprefix(stack.url), "")

        # Cancel: 404 like an unknown id, and the owner's job is untouched.
        assert_problem(httpx.delete(url, headers=stack.auth(stack.other_key), timeout=10), 404, "not-found")
        view = httpx.get(url, headers=stack.auth(), timeout=10).json()
        assert view["status"] not in ("cancelling", "cancelled"), view

        # The same Idempotency-Key is the other tenant's own key: a new job, never the owner's
        # replay, and no 409 that would reveal the key is taken.
        same = _submit(stack, stack.other_key, headers={"Idempotency-Key": idem})
        assert same.status_code == 202, same.text
        assert same.json()["id"] != mine
        different = _submit(stack, stack.other_key, headers={"Idempotency-Key": idem}, text=SHORT + " Again.")
        assert different.status_code in (202, 409), different.text
        if different.status_code == 409:  # the other tenant's own earlier use of its key
            assert mine not in different.text
        for j in {same.json()["id"], different.json().get("id")} - {None}:
            _cancel(stack, j, stack.other_key)
    finally:
        _cancel(stack, mine)


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": EVIL},
        {"X-Forwarded-Host": EVIL},
        {"Forwarded": f"host={EVIL};proto=https"},
        {"X-Forwarded-Proto": "https", "X-Forwarded-Host": f"{EVIL}:443"},
        {"X-Original-URL": f"https://{EVIL}/x", "X-Rewrite-URL": f"https://{EVIL}/x"},
    ],
    ids=["host", "x-forwarded-host", "forwarded", "proto+host", "original-url"],
)
def test_client_host_headers_never_reach_links(stack: Stack, headers: dict[str, str]) -> None:
    r = _submit(stack, headers=headers)
    assert r.status_code == 202, r.text
    try:
        assert EVIL not in r.text
        assert all(EVIL not in v for v in r.headers.values()), dict(r.headers)
        view = httpx.get(f"{stack.url}/v1/summaries/{r.json()['id']}", headers={**stack.auth(), **headers}, timeout=10)
        assert view.status_code == 200 and EVIL not in view.text
    finally:
        _cancel(stack, r.json()["id"])


@pytest.mark.parametrize(
    "address",
    [
        "reader@example.com\r\nBcc: victim@example.com",
        "reader@example.com\nSubject: hi",
        "reader@example.com, victim@example.com",
        '"a\r\nb"@example.com',
    ],
)
def test_mail_header_injection_is_a_422(stack: Stack, address: str) -> None:
    body = assert_problem(_submit(stack, notify={"email": address}), 422, "validation-error")
    assert "notify.email" in body["detail"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://2130706433/hook",
        "http://0x7f000001/hook",
        "http://localhost/hook",
        "https://hooks.example.com:6379/hook",
        "https://user:pw@hooks.example.com/hook",
        "https://hooks.example.com/" + "a" * 70_000,
    ],
)
def test_webhook_ssrf_forms_are_refused_through_the_gateway(stack: Stack, url: str) -> None:
    body = assert_problem(_submit(stack, notify={"webhook_url": url}), 422, "validation-error")
    assert "notify.webhook_url" in body["detail"]
