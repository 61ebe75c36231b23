"""The Python SDK (sdk/, precis-client) and the `precis` CLI against the live stack (tests/e2e/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from precis_client import (
    AsyncAccepted,
    AsyncClient,
    Client,
    Conflict,
    Gone,
    JobCancelled,
    JobStatus,
    JobView,
    NotFound,
    PayloadTooLarge,
    RealtimeSummary,
    Unauthorized,
    ValidationProblem,
)
from precis_client.cli import ExitCode

from tests.e2e.test_listing import _expire_now

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PARAGRAPH = (
    "The city council voted on Tuesday to extend the bike lane network by 40 kilometres over the next "
    "three years. Officials said cycling has risen by a quarter since 2020, and that the new lanes will "
    "connect the university district with the central station. Local businesses were split: some "
    "welcomed more foot traffic, while others worried about losing parking spaces."
)


def long_text() -> str:
    book = (ROOT / "tests/data/book/pride_and_prejudice.txt").read_text()
    words = book.split(" ")
    return " ".join(words[2000:3800])  # ~2,400 tokens: several chunks, over the realtime limit


@pytest.fixture
def client(stack) -> Iterator[Client]:
    with Client(stack.url, stack.dev_key) as c:
        yield c


def cli(stack, *args: str, key: str | None = None, stdin: str | None = None, timeout: float = 600):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRECIS_")}
    env.update(PRECIS_URL=stack.url, PRECIS_API_KEY=key or stack.dev_key)
    return subprocess.run(
        [sys.executable, "-m", "precis_client", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_realtime_summarize_returns_a_summary(client: Client) -> None:
    # no wait for earlier tests' async jobs: realtime_svc has its own Triton (scripts/run.sh)
    out = client.summarize(PARAGRAPH, max_summary_tokens=64)
    assert isinstance(out, RealtimeSummary)
    assert out.mode == "realtime" and len(out.summary.split()) >= 3
    assert out.usage.input_tokens > 20 and 0 < out.usage.output_tokens <= 64


def test_async_summarize_with_wait_reports_progress_and_succeeds(client: Client) -> None:
    seen: list[JobView] = []
    out = client.summarize(long_text(), wait=True, on_progress=seen.append, timeout=600)
    assert isinstance(out, JobView)
    assert out.status == JobStatus.succeeded and len((out.summary or "").split()) >= 5
    assert out.progress.chunks_total > 1 and out.progress.chunks_done == out.progress.chunks_total
    print("\nprogress seen:", [(v.status.value, v.progress.chunks_done, v.progress.chunks_total) for v in seen])
    assert seen and seen[-1].status == JobStatus.succeeded and seen[-1].id == out.id
    assert len(seen) >= 2
    done = [v.progress.chunks_done for v in seen]
    assert done == sorted(done)  # progress never goes back
    # a callback only when something changed
    keys = [(v.status, v.progress.chunks_done, v.progress.chunks_total) for v in seen]
    assert len(keys) == len(set(keys))


def test_same_idempotency_key_gives_one_job_then_cancel(client: Client) -> None:
    key = f"sdk-e2e-{uuid.uuid4()}"
    text = long_text()
    first = client.summarize(text, mode="async", idempotency_key=key)
    again = client.summarize(text, mode="async", idempotency_key=key)
    assert isinstance(first, AsyncAccepted) and isinstance(again, AsyncAccepted)
    assert again.id == first.id and again.replayed and not first.replayed

    view = client.cancel(first)
    assert view.id == first.id and view.status in (JobStatus.cancelled, JobStatus.cancelling)
    with pytest.raises(JobCancelled) as ei:
        client.wait(first, timeout=300)
    assert ei.value.job.status == JobStatus.cancelled
    with pytest.raises(Conflict) as ci:
        client.cancel(first.id)
    assert ci.value.status == 409 and ci.value.code == "job-finished" and first.id in ci.value.detail


def test_413_for_a_long_text_in_realtime_mode(client: Client) -> None:
    with pytest.raises(PayloadTooLarge) as ei:
        client.summarize(long_text(), mode="realtime")
    p = ei.value
    assert p.status == 413 and p.code == "text-too-long-for-realtime" and p.title and p.detail
    assert isinstance(p["limit_tokens"], int) and p.extensions["input_tokens"] > p["limit_tokens"]


def test_422_names_the_invalid_field(client: Client) -> None:
    with pytest.raises(ValidationProblem) as ei:
        client.summarize(PARAGRAPH, max_summary_tokens=100_000)
    p = ei.value
    assert p.status == 422 and p.code == "validation-error" and "max_summary_tokens" in p.detail
    assert [e["field"] for e in p.errors] == ["max_summary_tokens"]


def test_401_for_an_unknown_key(stack) -> None:
    with Client(stack.url, "not-a-key") as c, pytest.raises(Unauthorized) as ei:
        c.summarize(PARAGRAPH)
    p = ei.value
    assert p.status == 401 and p.code == "unauthorized" and p.title == "Missing or invalid API key"
    assert "not recognised" in p.detail and p.headers["www-authenticate"] == "Bearer"


def test_404_for_an_unknown_job(client: Client) -> None:
    with pytest.raises(NotFound) as ei:
        client.get(str(uuid.uuid4()))
    assert ei.value.status == 404 and ei.value.code == "not-found"


async def test_async_client_realtime_and_not_found(stack) -> None:
    async with AsyncClient(stack.url, stack.dev_key) as c:
        out = await c.summarize(PARAGRAPH, mode="realtime", max_summary_tokens=48)
        assert isinstance(out, RealtimeSummary) and len(out.summary.split()) >= 3
        with pytest.raises(NotFound):
            await c.get(str(uuid.uuid4()))


def test_cli_summarizes_a_file_with_wait_json(stack, tmp_path: Path) -> None:
    f = tmp_path / "article.txt"
    f.write_text(PARAGRAPH)
    r = cli(stack, "summarize", str(f), "--mode", "async", "--wait", "--json", "--max-tokens", "64")
    assert r.returncode == ExitCode.OK, r.stderr
    job = json.loads(r.stdout)
    assert job["status"] == "succeeded" and len(job["summary"].split()) >= 3
    assert job["progress"]["chunks_done"] == job["progress"]["chunks_total"] >= 1

    r = cli(stack, "jobs", "get", job["id"], "--json")
    assert r.returncode == ExitCode.OK, r.stderr
    assert json.loads(r.stdout)["summary"] == job["summary"]

    # cancelling a finished job: the API's 409, exit 3, problem on stderr
    r = cli(stack, "jobs", "cancel", job["id"])
    assert r.returncode == ExitCode.CLIENT_PROBLEM, r.stderr
    assert "409 Job already finished" in r.stderr and "already succeeded" in r.stderr


def test_cli_realtime_from_stdin_prints_the_summary(stack) -> None:
    r = cli(stack, "summarize", "-", stdin=PARAGRAPH)
    assert r.returncode == ExitCode.OK, r.stderr
    assert len(r.stdout.split()) >= 3 and not r.stdout.lstrip().startswith("{")


def test_cli_bad_key_exits_3_with_the_problem_on_stderr(stack, tmp_path: Path) -> None:
    f = tmp_path / "article.txt"
    f.write_text(PARAGRAPH)
    r = cli(stack, "summarize", str(f), "--wait", "--json", key="not-a-key")
    assert r.returncode == ExitCode.CLIENT_PROBLEM == 3
    assert r.stdout == ""
    assert "401 Missing or invalid API key" in r.stderr and "the API key is not recognised" in r.stderr


def test_cli_413_in_realtime_mode_exits_3(stack, tmp_path: Path) -> None:
    f = tmp_path / "long.txt"
    f.write_text(long_text())
    r = cli(stack, "summarize", str(f), "--mode", "realtime")
    assert r.returncode == ExitCode.CLIENT_PROBLEM, r.stderr
    assert "413 Text too long for realtime" in r.stderr and "limit_tokens" in r.stderr


# ---- listing and expiry (GET /v1/summaries, 410) ---------------------------------------------


def _filed(client: Client, n: int) -> list[str]:
    """n async jobs, cancelled at once (the worker has nothing to run); oldest first."""
    ids = []
    for _ in range(n):
        job = client.summarize(PARAGRAPH, mode="async")
        assert isinstance(job, AsyncAccepted)
        client.cancel(job)
        ids.append(job.id)
    return ids


def _cancelled(client: Client, job_id: str) -> JobView:
    deadline = time.monotonic() + 120
    view = client.get(job_id)
    while view.status != JobStatus.cancelled and time.monotonic() < deadline:
        time.sleep(0.5)
        view = client.get(job_id)
    assert view.status == JobStatus.cancelled
    return view


def _since(client: Client, first: str) -> datetime:
    """Just before the first of this test's jobs: the jobs of earlier tests are left out."""
    return client.get(first).created_at - timedelta(microseconds=1)


def test_sdk_lists_and_iterates_the_callers_jobs(stack, client: Client) -> None:
    mine = _filed(client, 5)
    since = _since(client, mine[0])
    page = client.list(created_after=since, limit=2)
    assert [v.id for v in page.items] == mine[:-3:-1] and page.next_cursor
    older = client.list(created_after=since, limit=2, cursor=page.next_cursor)
    assert [v.id for v in older.items] == mine[2:0:-1]
    assert [v.id for v in client.iter_jobs(created_after=since, page_size=2)] == mine[::-1]
    cancelled = [v.id for v in client.iter_jobs(created_after=since, status="cancelled")]
    assert set(cancelled) <= set(mine)
    with Client(stack.url, stack.other_key) as other:
        assert not {v.id for v in other.iter_jobs(created_after=since)} & set(mine)


async def test_async_client_lists_and_iterates(stack, client: Client) -> None:
    mine = _filed(client, 3)
    since = _since(client, mine[0])
    async with AsyncClient(stack.url, stack.dev_key) as c:
        page = await c.list(created_after=since, limit=100)
        assert [v.id for v in page.items] == mine[::-1] and page.next_cursor is None
        assert [v.id async for v in c.iter_jobs(created_after=since, page_size=1)] == mine[::-1]


def test_sdk_and_cli_report_an_expired_job_as_gone(stack, client: Client) -> None:
    [jid] = _filed(client, 1)
    assert _cancelled(client, jid).expires_at is not None
    _expire_now(stack, jid)
    with pytest.raises(Gone) as ei:
        client.get(jid)
    assert ei.value.status == 410 and ei.value.code == "job-expired" and ei.value["expired_at"]
    listed = {v.id: v for v in client.iter_jobs(created_after=datetime.now(UTC) - timedelta(minutes=10))}
    assert listed[jid].expired and listed[jid].summary is None

    r = cli(stack, "jobs", "get", jid)
    assert r.returncode == ExitCode.GONE == 7, r.stderr
    assert "410 Job expired" in r.stderr and jid in r.stderr


def test_cli_jobs_list_table_and_json(stack, client: Client) -> None:
    mine = _filed(client, 3)
    r = cli(stack, "jobs", "list", "--limit", "3")
    assert r.returncode == ExitCode.OK, r.stderr
    assert "STATUS" in r.stdout and all(j in r.stdout for j in mine)
    r = cli(stack, "jobs", "list", "--all", "--limit", "2", "--json")
    assert r.returncode == ExitCode.OK, r.stderr
    ids = [i["id"] for i in json.loads(r.stdout)["items"]]
    assert ids[:3] == mine[::-1] and len(ids) == len(set(ids))
    r = cli(stack, "jobs", "list", "--status", "cancelled", "--json", key=stack.other_key)
    assert r.returncode == ExitCode.OK, r.stderr
    assert not {i["id"] for i in json.loads(r.stdout)["items"]} & set(mine)
