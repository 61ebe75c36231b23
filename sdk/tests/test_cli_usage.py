"""CLI exit codes that need no server: usage errors and an unreachable API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from precis_client import Client, PollSchedule, cli
from precis_client.cli import ExitCode, app
from typer.testing import CliRunner


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("PRECIS_API_KEY", raising=False)
    monkeypatch.delenv("PRECIS_URL", raising=False)
    return CliRunner()


def test_missing_file_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    r = runner.invoke(app, ["summarize", str(tmp_path / "nope.txt"), "--api-key", "k"])
    assert r.exit_code == ExitCode.USAGE == 2
    assert "cannot read" in r.output


def test_no_api_key_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text("hello")
    r = runner.invoke(app, ["summarize", str(f)])
    assert r.exit_code == ExitCode.USAGE
    assert "PRECIS_API_KEY" in r.output


def test_unknown_option_is_a_usage_error(runner: CliRunner) -> None:
    assert runner.invoke(app, ["summarize", "-", "--mode", "fast"]).exit_code == ExitCode.USAGE


def test_unreachable_api_is_exit_4(runner: CliRunner) -> None:
    # port 9 on loopback: nothing listens; every retry is refused at once
    r = runner.invoke(app, ["--url", "http://127.0.0.1:9", "--api-key", "k", "jobs", "get", "x"])
    assert r.exit_code == ExitCode.SERVER_PROBLEM == 4
    assert "cannot reach the API" in r.output


def test_exit_codes_are_documented_in_help(runner: CliRunner) -> None:
    out = " ".join(runner.invoke(app, ["--help"]).output.split())
    for code in ("0 ok", "2 usage", "3 API refused", "4 server", "5 job failed", "6 timed out"):
        assert code in out


JOB = "5c0a8f1e-8d2b-4a7e-9f3c-0d6b1e2a3c4d"


def _views(*states: tuple[str, int, int]) -> list[httpx.Response]:
    out = []
    for status, done, total in states:
        body = {
            "id": JOB,
            "status": status,
            "progress": {"chunks_done": done, "chunks_total": total},
            "created_at": "2025-01-01T00:00:00Z",
            "summary": "the summary" if status == "succeeded" else None,
            "error": {"type": "model-error", "detail": "boom"} if status == "failed" else None,
        }
        out.append(httpx.Response(200, json=body))
    return out


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[httpx.Response]], None]:
    """Point the CLI's Client at a scripted in-process transport (fast polls)."""

    def install(answers: list[httpx.Response]) -> None:
        it = iter(answers)
        transport = httpx.MockTransport(lambda req: next(it))

        def make(url: str | None, key: str | None) -> Client:
            return Client(url, key, transport=transport, poll=PollSchedule(0.001, 1.0, 0.001))

        monkeypatch.setattr(cli, "Client", make)

    return install


def test_jobs_wait_prints_the_final_job(runner: CliRunner, scripted: Callable[[list[httpx.Response]], None]) -> None:
    scripted(_views(("queued", 0, 0), ("running", 1, 3), ("running", 2, 3), ("succeeded", 3, 3)))
    r = runner.invoke(app, ["--api-key", "k", "jobs", "wait", JOB, "--json"])
    assert r.exit_code == ExitCode.OK, r.output
    assert '"status": "succeeded"' in r.stdout and '"the summary"' in r.stdout


def test_a_failed_job_is_exit_5(runner: CliRunner, scripted: Callable[[list[httpx.Response]], None]) -> None:
    scripted(_views(("running", 1, 3), ("failed", 1, 3)))
    r = runner.invoke(app, ["--api-key", "k", "jobs", "wait", JOB, "-q"])
    assert r.exit_code == ExitCode.JOB_UNSUCCESSFUL == 5
    assert "failed: model-error: boom" in r.output


def test_waiting_too_long_is_exit_6(runner: CliRunner, scripted: Callable[[list[httpx.Response]], None]) -> None:
    scripted(_views(*[("running", 1, 3)] * 50))
    r = runner.invoke(app, ["--api-key", "k", "jobs", "wait", JOB, "--timeout", "0"])
    assert r.exit_code == ExitCode.TIMEOUT == 6
    assert "not finished after 0 s" in r.output and f"precis jobs wait {JOB}" in r.output
