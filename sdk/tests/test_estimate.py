"""``estimate`` (sync and async) and ``precis summarize --dry-run``, against an in-process
httpx.MockTransport: the request it sends (``POST /v1/summaries?dry_run=true``, the submit's body, no
Idempotency-Key), the typed ``Estimate`` it returns, a refused request raised like a submit's, and
the CLI's table and --json. (The live API: tests/e2e/test_sdk.py.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from precis_client import AsyncClient, Client, Estimate, Mode, RetryPolicy, ValidationProblem, cli
from precis_client.cli import ExitCode, app
from typer.testing import CliRunner

URL = "http://precis.test"
ESTIMATE = {
    "dry_run": True,
    "mode": "async",
    "input_tokens": 10894,
    "chunks": 15,
    "model_calls": 19,
    "reduce_levels": 2,
    "queue_ahead_calls": 40,
    "eta_s": 89.3,
    "eta_basis": "(40 model calls queued ahead + 19 of this job) / 0.661 calls/s",
    "throughput": {"window_s": 3600, "jobs": 12, "model_calls": 204, "busy_s": 308.6, "model_calls_per_s": 0.661},
}
NO_DATA = {
    **ESTIMATE,
    "queue_ahead_calls": None,
    "eta_s": None,
    "eta_basis": "no job succeeded in the last 3600 s: no recent pace to estimate from",
    "throughput": {"window_s": 3600, "jobs": 0, "model_calls": 0, "busy_s": 0.0, "model_calls_per_s": None},
}


class DryRunAPI:
    """POST /v1/summaries?dry_run=true answered with ``answer``; records the requests."""

    def __init__(self, answer: dict[str, Any] = ESTIMATE, status: int = 200) -> None:
        self.answer, self.status = answer, status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.method == "POST" and request.url.path == "/v1/summaries"
        assert request.url.params.get("dry_run") == "true"
        headers = {"content-type": "application/problem+json"} if self.status >= 400 else {}
        return httpx.Response(self.status, json=self.answer, headers=headers)


def test_estimate_sends_a_dry_run_of_the_submit_body_and_returns_the_estimate() -> None:
    api = DryRunAPI()
    with Client(URL, "k", transport=httpx.MockTransport(api)) as c:
        est = c.estimate("A long text.", mode=Mode.async_, max_summary_tokens=200, email="me@example.com")
    assert isinstance(est, Estimate)
    assert (est.mode, est.chunks, est.model_calls, est.eta_s) == ("async", 15, 19, 89.3)
    assert est.throughput is not None and est.throughput.model_calls_per_s == 0.661
    [req] = api.requests
    assert json.loads(req.content) == {
        "text": "A long text.",
        "mode": "async",
        "max_summary_tokens": 200,
        "notify": {"email": "me@example.com"},
    }
    assert "idempotency-key" not in req.headers  # nothing is created: no key to hold


async def test_async_estimate_is_the_same_call() -> None:
    api = DryRunAPI(NO_DATA)
    async with AsyncClient(URL, "k", transport=httpx.MockTransport(api)) as c:
        est = await c.estimate("A long text.")
    assert est.eta_s is None and "no job succeeded" in est.eta_basis
    assert json.loads(api.requests[0].content) == {"text": "A long text.", "mode": "auto"}


def test_a_refused_dry_run_raises_the_submits_problem() -> None:
    problem = {
        "type": "/problems/validation-error",
        "title": "Request body is not valid",
        "status": 422,
        "detail": "max_summary_tokens: Input should be less than or equal to 512",
        "errors": [{"field": "max_summary_tokens", "message": "...", "type": "less_than_equal"}],
    }
    api = DryRunAPI(problem, 422)
    with (
        Client(URL, "k", transport=httpx.MockTransport(api), retry=RetryPolicy(backoff_initial=0.0)) as c,
        pytest.raises(ValidationProblem) as err,
    ):
        c.estimate("text", max_summary_tokens=999)
    assert err.value.status == 422 and len(api.requests) == 1


# ---- precis summarize --dry-run ----------------------------------------------------------------


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


@pytest.fixture
def book(tmp_path: Path) -> Path:
    f = tmp_path / "book.txt"
    f.write_text("It is a truth universally acknowledged. " * 50, encoding="utf-8")
    return f


def test_dry_run_prints_the_estimate_as_a_table(runner: CliRunner, serve, book: Path) -> None:
    api = DryRunAPI()
    serve(api)
    r = runner.invoke(app, ["--api-key", "k", "summarize", str(book), "--dry-run", "--mode", "async"])
    assert r.exit_code == ExitCode.OK, r.output
    for line in ("route", "async", "input tokens", "10894", "chunks", "15", "model calls", "19", "89.3 s"):
        assert line in r.stdout
    assert "0.661 calls/s" in r.stdout and "40 model calls" in r.stdout
    assert json.loads(api.requests[0].content)["mode"] == "async"


def test_dry_run_json_is_the_estimate(runner: CliRunner, serve, book: Path) -> None:
    serve(DryRunAPI(NO_DATA))
    r = runner.invoke(app, ["--api-key", "k", "summarize", str(book), "--dry-run", "--json"])
    assert r.exit_code == ExitCode.OK, r.output
    doc = json.loads(r.stdout)
    assert doc["eta_s"] is None and doc["dry_run"] is True and doc["chunks"] == 15


def test_dry_run_without_data_says_the_eta_is_unknown(runner: CliRunner, serve, book: Path) -> None:
    serve(DryRunAPI(NO_DATA))
    r = runner.invoke(app, ["--api-key", "k", "summarize", str(book), "--dry-run"])
    assert r.exit_code == ExitCode.OK, r.output
    assert "unknown" in r.stdout and "no recent pace" in r.stdout


def test_a_refused_dry_run_is_exit_3(runner: CliRunner, serve, book: Path) -> None:
    problem = {"type": "/problems/text-too-large", "title": "Text too large", "status": 413, "detail": "too big"}
    serve(DryRunAPI(problem, 413))
    r = runner.invoke(app, ["--api-key", "k", "summarize", str(book), "--dry-run"])
    assert r.exit_code == ExitCode.CLIENT_PROBLEM
    assert "413 Text too large" in r.stderr


@pytest.mark.parametrize("extra", [["--wait"], ["--idempotency-key", "k1"]])
def test_dry_run_with_submit_options_is_a_usage_error(runner: CliRunner, book: Path, extra: list[str]) -> None:
    r = runner.invoke(app, ["--api-key", "k", "summarize", str(book), "--dry-run", *extra])
    assert r.exit_code == ExitCode.USAGE
