"""Listing and expiry in the client, against an in-process httpx.MockTransport: the query it sends,
cursor following in ``iter_jobs`` (sync and async), argument checks before any request, ``Gone``
for a 410, and ``precis jobs list`` (table, --json, --all, exit 7 for an expired job).
(The live API: tests/e2e/test_sdk.py.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from precis_client import AsyncClient, Client, Gone, JobPage, JobStatus, RetryPolicy, ValidationProblem, cli
from precis_client.cli import ExitCode, app
from typer.testing import CliRunner

URL = "http://precis.test"
IDS = [f"00000000-0000-4000-8000-{i:012d}" for i in range(7)]


def item(jid: str, status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    return {
        "id": jid,
        "status": status,
        "progress": {"chunks_done": 2, "chunks_total": 2},
        "created_at": "2026-12-01T10:00:00Z",
        "finished_at": "2026-12-01T10:01:00Z",
        "expires_at": "2026-12-31T10:01:00Z",
        **extra,
    }


class PagedAPI:
    """GET /v1/summaries over IDS in pages of ``limit``; the cursor is the index of the next item."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.url.path == "/v1/summaries" and request.method == "GET"
        q = request.url.params
        limit = int(q.get("limit", "20"))
        start = int(q.get("cursor", "0"))
        chunk = IDS[start : start + limit]
        nxt = str(start + limit) if start + limit < len(IDS) else None
        return httpx.Response(200, json={"items": [item(j) for j in chunk], "next_cursor": nxt})


def test_list_sends_the_filters_and_parses_the_page() -> None:
    api = PagedAPI()
    with Client(URL, "k", transport=httpx.MockTransport(api)) as c:
        page = c.list(status="succeeded", created_after=datetime(2026, 12, 1, tzinfo=UTC), limit=3)
    assert isinstance(page, JobPage) and [v.id for v in page.items] == IDS[:3] and page.next_cursor == "3"
    assert page.items[0].expires_at == datetime(2026, 12, 31, 10, 1, tzinfo=UTC) and not page.items[0].expired
    q = api.requests[0].url.params
    assert dict(q) == {"status": "succeeded", "created_after": "2026-12-01T00:00:00+00:00", "limit": "3"}
    assert api.requests[0].headers["authorization"] == "Bearer k"


def test_iter_jobs_follows_every_cursor_once() -> None:
    api = PagedAPI()
    with Client(URL, "k", transport=httpx.MockTransport(api)) as c:
        it = c.iter_jobs(page_size=3, status=JobStatus.succeeded)
        assert api.requests == []  # lazy: nothing is fetched before the first item is asked for
        ids = [v.id for v in it]
    assert ids == IDS
    assert [r.url.params.get("cursor") for r in api.requests] == [None, "3", "6"]
    assert {r.url.params["status"] for r in api.requests} == {"succeeded"}


async def test_async_iter_jobs_follows_every_cursor() -> None:
    api = PagedAPI()
    async with AsyncClient(URL, "k", transport=httpx.MockTransport(api)) as c:
        ids = [v.id async for v in c.iter_jobs(page_size=2)]
        page = await c.list(limit=5)
    assert ids == IDS and len(api.requests) == 5
    assert [v.id for v in page.items] == IDS[:5] and page.next_cursor == "5"


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"limit": 101}, "between 1 and 100"),
        ({"limit": 0}, "between 1 and 100"),
        ({"status": "done"}, "done"),
        ({"created_after": datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
def test_bad_arguments_fail_before_any_request(kwargs: dict[str, Any], says: str) -> None:
    api = PagedAPI()
    with Client(URL, "k", transport=httpx.MockTransport(api)) as c, pytest.raises(ValueError, match=says):
        c.list(**kwargs)
    assert api.requests == []


def problem(status: int, code: str, **ext: Any) -> httpx.Response:
    doc = {"type": f"https://precis.dev/problems/{code}", "title": code, "status": status, "detail": "d", **ext}
    return httpx.Response(status, json=doc, headers={"content-type": "application/problem+json"})


def test_a_410_is_gone_with_the_problem_fields_and_is_not_retried() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return problem(410, "job-expired", expired_at="2026-12-31T10:01:00+00:00")

    with Client(URL, "k", transport=httpx.MockTransport(handler), retry=RetryPolicy(backoff_initial=0.0)) as c:
        with pytest.raises(Gone) as ei:
            c.get(IDS[0])
    assert ei.value.status == 410 and ei.value.code == "job-expired"
    assert ei.value["expired_at"] == "2026-12-31T10:01:00+00:00" and len(calls) == 1


def test_a_server_side_422_on_a_cursor_is_a_validation_problem() -> None:
    with Client(URL, "k", transport=httpx.MockTransport(lambda r: problem(422, "invalid-cursor"))) as c:
        with pytest.raises(ValidationProblem) as ei:
            c.list(cursor="tampered")
    assert ei.value.code == "invalid-cursor"


# ---- precis jobs list ------------------------------------------------------------------------


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("PRECIS_API_KEY", raising=False)
    monkeypatch.delenv("PRECIS_URL", raising=False)
    return CliRunner()


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[httpx.Request], httpx.Response]], None]:
    def install(handler: Callable[[httpx.Request], httpx.Response]) -> None:
        transport = httpx.MockTransport(handler)
        monkeypatch.setattr(cli, "Client", lambda url, key: Client(url, key, transport=transport))

    return install


def test_jobs_list_prints_a_table_with_full_ids_and_the_next_page_hint(runner: CliRunner, serve) -> None:
    serve(PagedAPI())
    r = runner.invoke(app, ["--api-key", "k", "jobs", "list", "--limit", "3", "--status", "succeeded"])
    assert r.exit_code == ExitCode.OK, r.output
    for col in ("ID", "STATUS", "PROGRESS", "CREATED", "EXPIRES"):
        assert col in r.stdout
    assert all(j in r.stdout for j in IDS[:3]) and IDS[3] not in r.stdout
    assert "2/2" in r.stdout and "2026-12-31 10:01:00" in r.stdout
    assert "precis jobs list --status succeeded --limit 3 --cursor 3" in r.stderr


def test_jobs_list_all_json_is_every_job(runner: CliRunner, serve) -> None:
    serve(PagedAPI())
    r = runner.invoke(app, ["--api-key", "k", "jobs", "list", "--all", "--limit", "2", "--json"])
    assert r.exit_code == ExitCode.OK, r.output
    doc = json.loads(r.stdout)
    assert [v["id"] for v in doc["items"]] == IDS and doc["next_cursor"] is None


def test_jobs_list_shows_expired_jobs(runner: CliRunner, serve) -> None:
    expired = item(IDS[0], "succeeded", expired_at="2026-12-31T10:05:00Z", summary=None)
    serve(lambda r: httpx.Response(200, json={"items": [expired], "next_cursor": None}))
    r = runner.invoke(app, ["--api-key", "k", "jobs", "list"])
    assert r.exit_code == ExitCode.OK, r.output
    assert "succeeded (expired)" in r.stdout and "2026-12-31 10:05:00" in r.stdout


def test_jobs_list_limit_over_100_is_a_usage_error(runner: CliRunner) -> None:
    r = runner.invoke(app, ["--api-key", "k", "jobs", "list", "--limit", "101"])
    assert r.exit_code == ExitCode.USAGE and "100" in r.output


def test_jobs_get_of_an_expired_job_is_exit_7(runner: CliRunner, serve) -> None:
    serve(lambda r: problem(410, "job-expired", expired_at="2026-12-31T10:01:00+00:00"))
    r = runner.invoke(app, ["--api-key", "k", "jobs", "get", IDS[0]])
    assert r.exit_code == ExitCode.GONE == 7
    assert "410 job-expired" in r.stderr and "expired_at" in r.stderr


def test_exit_7_is_documented_in_help(runner: CliRunner) -> None:
    out = " ".join(runner.invoke(app, ["--help"]).output.split())
    assert "7 job expired" in out
