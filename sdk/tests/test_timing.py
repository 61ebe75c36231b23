"""Retry backoff and poll schedule (pure functions)."""

from __future__ import annotations

import httpx
from precis_client import PollSchedule, RetryPolicy
from precis_client.errors import problem_from_response


def problem(status: int, retry_after: str | None = None) -> Exception:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    doc = {"type": "t", "title": "T", "status": status, "detail": "d"}
    return problem_from_response(httpx.Response(status, json=doc, headers=headers))


def test_exponential_backoff_with_jitter_is_bounded() -> None:
    pol = RetryPolicy(backoff_initial=0.5, backoff_max=8.0)
    for attempt, step in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)]:
        assert pol.delay(attempt, None, rand=0.0) == step / 2
        assert pol.delay(attempt, None, rand=1.0) == step
        assert step / 2 <= pol.delay(attempt, None) <= step


def test_retry_after_replaces_the_backoff_and_is_capped() -> None:
    pol = RetryPolicy(max_retry_after=30.0)
    assert pol.delay(1, problem(503, "7"), rand=0.0) == 7.0
    assert pol.delay(1, problem(503, "0"), rand=1.0) == 0.0
    assert pol.delay(1, problem(503, "300")) == 30.0


def test_what_is_retried() -> None:
    pol = RetryPolicy(max_retry_after=30.0)
    req = httpx.Request("POST", "http://x/v1/summaries")
    assert pol.should_retry(httpx.ConnectError("refused", request=req))
    assert pol.should_retry(httpx.ReadTimeout("slow", request=req))
    assert pol.should_retry(httpx.RemoteProtocolError("closed", request=req))
    assert pol.should_retry(problem(503, "2"))
    assert not pol.should_retry(problem(503))  # no Retry-After: the server did not ask for a retry
    assert not pol.should_retry(problem(503, "120"))  # asks for longer than we are willing to block
    assert not pol.should_retry(problem(500))
    assert not pol.should_retry(problem(504, "2"))  # the summary timed out: retrying would redo it
    assert not pol.should_retry(problem(429, "1"))
    assert not pol.should_retry(problem(422))
    assert not pol.should_retry(ValueError("x"))


def test_poll_schedule_grows_while_nothing_changes_and_resets_on_progress() -> None:
    s = PollSchedule(initial=0.5, factor=2.0, maximum=3.0)
    assert s.next(changed=True) == 0.5
    assert s.next(changed=False) == 1.0
    assert s.next(changed=False) == 2.0
    assert s.next(changed=False) == 3.0
    assert s.next(changed=False) == 3.0
    assert s.next(changed=True) == 0.5
    assert s.next(changed=False, retry_after=10.0) == 10.0  # Retry-After is a floor
    assert s.next(changed=False, retry_after=0.1) == 2.0  # back on its own schedule (1.0, then 2.0)
