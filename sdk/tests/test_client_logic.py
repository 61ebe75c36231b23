"""Client logic against an in-process httpx.MockTransport: idempotency keys across retries, retry bounds,
polling with progress callbacks and Retry-After, typed errors. (The live API is tested in tests/e2e/test_sdk.py.)"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from precis_client import (
    AsyncAccepted,
    AsyncClient,
    Client,
    ConfigurationError,
    JobCancelled,
    JobFailed,
    JobView,
    NotFound,
    PrecisTransportError,
    RealtimeSummary,
    RetryPolicy,
    ServiceUnavailable,
    Unauthorized,
    WaitTimeout,
)

URL = "http://precis.test"
JOB = "5c0a8f1e-8d2b-4a7e-9f3c-0d6b1e2a3c4d"
FAST = RetryPolicy(max_attempts=4, backoff_initial=0.01, backoff_max=0.02)


def problem(status: int, type_: str, detail: str = "d", headers: dict[str, str] | None = None, **ext: Any):
    doc = {"type": f"https://precis.dev/problems/{type_}", "title": type_, "status": status, "detail": detail, **ext}
    return httpx.Response(status, json=doc, headers={"content-type": "application/problem+json", **(headers or {})})


def accepted(status: str = "queued", replayed: bool = False) -> httpx.Response:
    body = {"id": JOB, "mode": "async", "status": status, "status_url": f"{URL}/v1/summaries/{JOB}"}
    return httpx.Response(202, json=body, headers={"Idempotent-Replayed": "true"} if replayed else {})


def view(status: str, done: int = 0, total: int = 0, **extra: Any) -> httpx.Response:
    body = {
        "id": JOB,
        "status": status,
        "progress": {"chunks_done": done, "chunks_total": total},
        "created_at": "2025-01-01T00:00:00Z",
        **extra,
    }
    return httpx.Response(200, json=body)


Handler = Callable[[httpx.Request], httpx.Response]


class Script:
    """A mock API answering from a list: a response, or an exception class to raise as a transport error."""

    def __init__(self, *answers: httpx.Response | type[Exception]) -> None:
        self.answers: Iterator[httpx.Response | type[Exception]] = iter(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        nxt = next(self.answers)
        if isinstance(nxt, type):
            raise nxt("injected", request=request)  # type: ignore[call-arg]
        return nxt


def client(script: Script, retry: RetryPolicy = FAST) -> tuple[Client, list[float]]:
    c = Client(URL, "k", retry=retry, transport=httpx.MockTransport(script))
    sleeps: list[float] = []
    c._sleep = sleeps.append
    return c, sleeps


def test_a_retried_submit_sends_one_idempotency_key_and_yields_one_job() -> None:
    script = Script(httpx.ConnectError, httpx.ReadTimeout, accepted(replayed=True))
    c, sleeps = client(script)
    out = c.summarize("long text", mode="async")
    assert isinstance(out, AsyncAccepted) and out.id == JOB and out.replayed
    keys = [r.headers["idempotency-key"] for r in script.requests]
    assert len(keys) == 3 and len(set(keys)) == 1 and keys[0]
    assert out.idempotency_key == keys[0]
    assert len(sleeps) == 2
    bodies = [json.loads(r.content) for r in script.requests]
    assert bodies == [{"text": "long text", "mode": "async"}] * 3
    assert all(r.headers["authorization"] == "Bearer k" for r in script.requests)


def test_each_submit_call_has_its_own_key_unless_one_is_given() -> None:
    script = Script(accepted(), accepted(), accepted())
    c, _ = client(script)
    c.summarize("a")
    c.summarize("a")
    c.summarize("a", idempotency_key="mine")
    keys = [r.headers["idempotency-key"] for r in script.requests]
    assert keys[0] != keys[1] and keys[2] == "mine"


def test_a_503_with_retry_after_is_retried_after_that_delay_with_the_same_key() -> None:
    script = Script(problem(503, "upstream-unavailable", headers={"Retry-After": "2"}), accepted())
    c, sleeps = client(script)
    assert isinstance(c.summarize("t", mode="async"), AsyncAccepted)
    assert sleeps == [2.0]
    assert script.requests[0].headers["idempotency-key"] == script.requests[1].headers["idempotency-key"]


def test_a_503_without_retry_after_is_raised_at_once() -> None:
    script = Script(problem(503, "unavailable"))
    c, sleeps = client(script)
    with pytest.raises(ServiceUnavailable) as ei:
        c.summarize("t")
    assert ei.value.status == 503 and len(script.requests) == 1 and sleeps == []


def test_retries_are_bounded() -> None:
    script = Script(*[httpx.ConnectError] * 10)
    c, sleeps = client(script, RetryPolicy(max_attempts=3, backoff_initial=0.01))
    with pytest.raises(PrecisTransportError) as ei:
        c.summarize("t")
    assert isinstance(ei.value.cause, httpx.ConnectError)
    assert len(script.requests) == 3 and len(sleeps) == 2


def test_4xx_is_raised_typed_and_never_retried() -> None:
    script = Script(problem(401, "unauthorized", "the API key is not recognised"))
    c, _ = client(script)
    with pytest.raises(Unauthorized) as ei:
        c.summarize("t")
    assert ei.value.detail == "the API key is not recognised" and len(script.requests) == 1


def test_realtime_answer_and_submit_body() -> None:
    body = {
        "id": "r1",
        "mode": "realtime",
        "summary": "s",
        "model": "m",
        "usage": {"input_tokens": 3, "output_tokens": 1},
        "timings": {"total_ms": 1.0},
    }
    script = Script(httpx.Response(200, json=body))
    c, _ = client(script)
    out = c.summarize("t", mode="realtime", max_summary_tokens=64, language="en", wait=True)
    assert isinstance(out, RealtimeSummary) and out.summary == "s" and out.usage.input_tokens == 3
    sent = json.loads(script.requests[0].content)
    assert sent == {"text": "t", "mode": "realtime", "max_summary_tokens": 64, "language": "en"}


def test_notify_options_go_into_the_body() -> None:
    script = Script(accepted())
    c, _ = client(script)
    c.summarize("t", email="a@example.com", webhook="https://hook.example/x", metadata={"k": 1})
    sent = json.loads(script.requests[0].content)
    assert sent["notify"] == {"email": "a@example.com", "webhook_url": "https://hook.example/x"}
    assert sent["metadata"] == {"k": 1}


def test_wait_reports_progress_changes_and_honours_retry_after() -> None:
    script = Script(
        accepted(),
        view("queued"),
        view("running", 0, 3),
        view("running", 0, 3),  # unchanged: no callback, the poll interval grows
        problem(429, "rate-limited", headers={"Retry-After": "4"}),
        view("running", 2, 3),
        view("succeeded", 3, 3, summary="short"),
    )
    c, sleeps = client(script)
    seen: list[tuple[str, int, int]] = []
    out = c.summarize(
        "t",
        wait=True,
        on_progress=lambda v: seen.append((v.status.value, v.progress.chunks_done, v.progress.chunks_total)),
    )
    assert isinstance(out, JobView) and out.summary == "short"
    assert seen == [("queued", 0, 0), ("running", 0, 3), ("running", 2, 3), ("succeeded", 3, 3)]
    assert [r.method for r in script.requests] == ["POST"] + ["GET"] * 6
    assert script.requests[1].url.path == f"/v1/summaries/{JOB}"
    assert sleeps[0] == sleeps[1] < sleeps[2]  # reset on change, grows when unchanged
    assert sleeps[3] >= 4.0  # the 429's Retry-After


def test_wait_raises_for_failed_and_cancelled_jobs() -> None:
    err = {"type": "model-error", "detail": "boom"}
    c, _ = client(Script(view("failed", 1, 3, error=err)))
    with pytest.raises(JobFailed) as ei:
        c.wait(JOB)
    assert ei.value.job.error is not None and ei.value.job.error.detail == "boom"
    c, _ = client(Script(view("cancelled")))
    with pytest.raises(JobCancelled):
        c.wait(JOB)
    c, _ = client(Script(view("cancelled")))
    assert c.wait(JOB, raise_on_failure=False).status == "cancelled"


def test_wait_times_out_with_the_last_view() -> None:
    c, _ = client(Script(view("running", 1, 4)))
    with pytest.raises(WaitTimeout) as ei:
        c.wait(JOB, timeout=0)
    assert isinstance(ei.value, TimeoutError)
    assert ei.value.job is not None and ei.value.job.progress.chunks_done == 1


def test_get_404_is_not_found() -> None:
    c, _ = client(Script(problem(404, "not-found", "no summary job with this id")))
    with pytest.raises(NotFound):
        c.get(JOB)


def test_a_retried_cancel_that_went_through_the_first_time_is_a_success() -> None:
    script = Script(httpx.ReadTimeout, problem(409, "job-finished"), view("cancelled"))
    c, _ = client(script)
    assert c.cancel(JOB).status == "cancelled"
    assert [r.method for r in script.requests] == ["DELETE", "DELETE", "GET"]


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECIS_URL", "http://env.test:9/v1/")
    monkeypatch.setenv("PRECIS_API_KEY", "envkey")
    with Client() as c:
        assert c.base_url == "http://env.test:9"
    with Client("http://arg.test", "argkey") as c:
        assert c.base_url == "http://arg.test" and c._api_key == "argkey"
    monkeypatch.delenv("PRECIS_API_KEY")
    with pytest.raises(ConfigurationError):
        Client()
    with pytest.raises(ConfigurationError):
        Client("ftp://x", "k")


async def test_async_client_reuses_the_key_and_awaits_async_callbacks() -> None:
    script = Script(httpx.ConnectError, accepted(), view("running", 1, 2), view("succeeded", 2, 2, summary="s"))
    sleeps: list[float] = []

    async def fake_sleep(s: float) -> None:
        sleeps.append(s)

    seen: list[int] = []

    async def on_progress(v: JobView) -> None:
        seen.append(v.progress.chunks_done)

    async with AsyncClient(URL, "k", retry=FAST, transport=httpx.MockTransport(script)) as c:
        c._sleep = fake_sleep
        out = await c.summarize("t", wait=True, on_progress=on_progress)
    assert isinstance(out, JobView) and out.summary == "s"
    assert seen == [1, 2]
    keys = {r.headers["idempotency-key"] for r in script.requests if r.method == "POST"}
    assert len(keys) == 1 and len([r for r in script.requests if r.method == "POST"]) == 2


def test_a_spilled_short_text_comes_back_as_a_job_naming_why() -> None:
    body = {
        "id": JOB,
        "mode": "async",
        "status": "queued",
        "status_url": f"{URL}/v1/summaries/{JOB}",
        "route_reason": "spilled_over",
        "spill_reason": "realtime_at_capacity",
    }
    c, _ = client(Script(httpx.Response(202, json=body)))
    job = c.summarize("A short paragraph.")  # mode=auto
    assert isinstance(job, AsyncAccepted)
    assert (job.route_reason, job.spill_reason) == ("spilled_over", "realtime_at_capacity")
