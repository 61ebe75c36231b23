"""``precis``: the command line client of the Précis API (``pip install 'precis-client[cli]'``).

Exit codes (also in ``precis --help`` and sdk/README.md)::

    0    ok
    1    unexpected error in the CLI itself
    2    usage: bad options or arguments, unreadable input file, no API key
    3    the API refused the request: a 4xx problem (401 bad key, 404 no such job, 409, 413, 415, 422, 429)
    4    the server failed or cannot be reached: a 5xx problem (500, 503, 504) or a connection error
    5    the job ended failed or cancelled (with --wait / jobs wait)
    6    timed out waiting for the job (--timeout); the job goes on
    7    the job expired (410): its document and summary were deleted after the retention period
    130  interrupted (Ctrl-C); a submitted job goes on
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any

try:
    import typer
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Table
except ImportError as exc:  # pragma: no cover - only without the [cli] extra
    raise SystemExit(f"the precis CLI needs its extra: pip install 'precis-client[cli]' ({exc})") from None

from precis_client import __version__
from precis_client.client import Client
from precis_client.errors import (
    ClientProblem,
    ConfigurationError,
    Gone,
    JobUnsuccessful,
    PrecisProblem,
    PrecisTransportError,
    WaitTimeout,
)
from precis_client.models import AsyncAccepted, Estimate, JobPage, JobStatus, JobView, Mode, RealtimeSummary


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    CLIENT_PROBLEM = 3
    SERVER_PROBLEM = 4
    JOB_UNSUCCESSFUL = 5
    TIMEOUT = 6
    GONE = 7
    INTERRUPTED = 130


EPILOG = (
    "Exit codes: 0 ok; 2 usage (bad options, unreadable file, no API key); 3 API refused the request (4xx "
    "problem); 4 server failed or unreachable (5xx problem, connection error); 5 job failed or cancelled; "
    "6 timed out waiting for the job; 7 job expired (410, past its retention); 130 interrupted."
)

app = typer.Typer(
    name="precis",
    help="Summarize texts with the Précis API. Configure with PRECIS_URL and PRECIS_API_KEY (or --url/--api-key).",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(help="Inspect, wait for and cancel async summary jobs.", epilog=EPILOG, no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

stderr = Console(stderr=True, highlight=False, soft_wrap=True)

UrlOpt = Annotated[
    str | None, typer.Option("--url", help="API base URL (default: env PRECIS_URL, else http://localhost:8080)")
]
KeyOpt = Annotated[str | None, typer.Option("--api-key", help="API key (default: env PRECIS_API_KEY)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer on stdout.")]
TimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", min=0.0, help="Give up waiting after this many seconds (exit 6).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or status lines on stderr.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"precis-client {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option("--url", envvar="PRECIS_URL", help="API base URL.")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="PRECIS_API_KEY", help="API key.")] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    ctx.obj = {"url": url, "api_key": api_key}


def _note(message: str, quiet: bool = False) -> None:
    if not quiet:
        stderr.print(message, markup=False)


def _print_problem(p: PrecisProblem) -> None:
    stderr.print(f"precis: {p.status} {p.title}", style="bold red", markup=False)
    if p.detail:
        stderr.print(f"  {p.detail}", markup=False)
    if p.type and p.type != "about:blank":
        stderr.print(f"  type: {p.type}", markup=False)
    errors = p.extensions.get("errors")
    others = {k: v for k, v in p.extensions.items() if k != "errors"}
    if others:
        stderr.print("  " + ", ".join(f"{k}: {v}" for k, v in others.items()), markup=False)
    if isinstance(errors, list):
        for e in errors:
            if isinstance(e, dict):
                stderr.print(f"  - {e.get('field', '?')}: {e.get('message', '')}", markup=False)
    if p.retry_after is not None:
        stderr.print(f"  retry after {p.retry_after:g} s", markup=False)


def _echo_json(model: Any) -> None:
    typer.echo(model.model_dump_json(indent=2))


@contextmanager
def _errors(as_json: bool = False) -> Iterator[None]:
    """Map the SDK's exceptions to the documented exit codes (message on stderr)."""
    try:
        yield
    except ConfigurationError as exc:
        stderr.print(f"precis: {exc}", style="bold red", markup=False)
        raise typer.Exit(ExitCode.USAGE) from None
    except Gone as exc:
        _print_problem(exc)
        raise typer.Exit(ExitCode.GONE) from None
    except PrecisProblem as exc:
        _print_problem(exc)
        code = ExitCode.CLIENT_PROBLEM if isinstance(exc, ClientProblem) else ExitCode.SERVER_PROBLEM
        raise typer.Exit(code) from None
    except PrecisTransportError as exc:
        stderr.print(f"precis: cannot reach the API: {exc.cause or exc}", style="bold red", markup=False)
        raise typer.Exit(ExitCode.SERVER_PROBLEM) from None
    except JobUnsuccessful as exc:
        if as_json:
            _echo_json(exc.job)
        stderr.print(f"precis: {exc}", style="bold red", markup=False)
        raise typer.Exit(ExitCode.JOB_UNSUCCESSFUL) from None
    except WaitTimeout as exc:
        if as_json and exc.job is not None:
            _echo_json(exc.job)
        stderr.print(f"precis: {exc}; keep waiting with: precis jobs wait {exc.job_id}", style="red", markup=False)
        raise typer.Exit(ExitCode.TIMEOUT) from None


def _client(ctx: typer.Context, url: str | None, api_key: str | None) -> Client:
    obj = ctx.find_root().obj or {}
    return Client(url or obj.get("url"), api_key or obj.get("api_key"))


def _wait(client: Client, job_id: str, timeout: float | None, quiet: bool) -> JobView:
    """``client.wait`` with a progress bar on stderr driven by chunks_done/chunks_total."""
    if quiet:
        return client.wait(job_id, timeout=timeout)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=False) as bar:
        task: TaskID = bar.add_task(f"job {job_id[:8]} queued", total=None)

        def on_progress(view: JobView) -> None:
            total = view.progress.chunks_total or None
            bar.update(
                task,
                total=total,
                completed=view.progress.chunks_done,
                description=f"job {job_id[:8]} {view.status.value}",
            )

        try:
            return client.wait(job_id, on_progress=on_progress, timeout=timeout)
        except KeyboardInterrupt:
            bar.stop()
            stderr.print(
                f"interrupted; job {job_id} goes on: precis jobs get {job_id} / precis jobs cancel {job_id}",
                markup=False,
            )
            raise typer.Exit(ExitCode.INTERRUPTED) from None


def _print_view(view: JobView) -> None:
    p = view.progress
    typer.echo(f"id:        {view.id}")
    typer.echo(f"status:    {view.status.value}")
    typer.echo(f"progress:  {p.chunks_done}/{p.chunks_total} chunks")
    typer.echo(f"created:   {view.created_at.isoformat()}")
    if view.started_at:
        typer.echo(f"started:   {view.started_at.isoformat()}")
    if view.finished_at:
        typer.echo(f"finished:  {view.finished_at.isoformat()}")
    if view.expires_at:
        typer.echo(f"expires:   {view.expires_at.isoformat()}")
    if view.error:
        typer.echo(f"error:     {view.error.type}: {view.error.detail}")
    for n in view.notifications or []:
        typer.echo(f"notify:    {n.get('channel', '?')} {n.get('status', '?')}")
    if view.summary is not None:
        typer.echo("summary:")
        typer.echo(view.summary)


def _read_input(file: str) -> str:
    try:
        if file == "-":
            return sys.stdin.read()
        return Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {file!r}: {exc}", param_hint="FILE") from None


@app.command()
def summarize(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(metavar="FILE|-", help="UTF-8 text file to summarize; - reads stdin.")],
    mode: Annotated[Mode, typer.Option("--mode", help="auto routes by length.")] = Mode.auto,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for an async job, with a progress bar.")] = False,
    as_json: JsonOpt = False,
    email: Annotated[str | None, typer.Option("--email", help="Email the summary of an async job here.")] = None,
    webhook: Annotated[str | None, typer.Option("--webhook", help="POST the async job's result here.")] = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=1, help="Summary length limit in tokens (≤ 512).")
    ] = None,
    language: Annotated[str | None, typer.Option("--language", help="auto, en, zh, ... (server default auto)")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Reuse a key to resubmit without a second job.")
    ] = None,
    timeout: TimeoutOpt = None,
    quiet: QuietOpt = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Only estimate: route, tokens, chunks, model calls and ETA; nothing is submitted."
        ),
    ] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Summarize FILE (or stdin). Prints the summary; for an async job without --wait, its id; with
    --dry-run, the estimate (a table, or --json)."""
    if dry_run and (wait or idempotency_key):
        raise typer.BadParameter("--dry-run submits nothing: drop --wait and --idempotency-key", param_hint="--dry-run")
    text = _read_input(file)
    with _errors(as_json), _client(ctx, url, api_key) as client:
        if dry_run:
            est = client.estimate(
                text, mode=mode, max_summary_tokens=max_tokens, language=language, email=email, webhook=webhook
            )
            _echo_json(est) if as_json else _out_console().print(_estimate_table(est))
            return
        result = client.summarize(
            text,
            mode=mode,
            max_summary_tokens=max_tokens,
            language=language,
            email=email,
            webhook=webhook,
            idempotency_key=idempotency_key,
        )
        if isinstance(result, RealtimeSummary):
            if as_json:
                _echo_json(result)
            else:
                typer.echo(result.summary)
            return
        assert isinstance(result, AsyncAccepted)
        replayed = " (replayed: this Idempotency-Key already made it)" if result.replayed else ""
        _note(f"job {result.id} {result.status.value}{replayed}", quiet)
        if not wait:
            if as_json:
                _echo_json(result)
            else:
                typer.echo(result.id)
                _note(f"follow it with: precis jobs wait {result.id}", quiet)
            return
        view = _wait(client, result.id, timeout, quiet)
        if as_json:
            _echo_json(view)
        else:
            typer.echo(view.summary or "")


JobIdArg = Annotated[str, typer.Argument(metavar="ID", help="The job id (from summarize).")]


@jobs_app.command("get")
def jobs_get(
    ctx: typer.Context, job_id: JobIdArg, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None
) -> None:
    """Show a job: status, progress, and its summary once it succeeded."""
    with _errors(as_json), _client(ctx, url, api_key) as client:
        view = client.get(job_id)
        _echo_json(view) if as_json else _print_view(view)


@jobs_app.command("cancel")
def jobs_cancel(
    ctx: typer.Context, job_id: JobIdArg, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None
) -> None:
    """Cancel a queued or running job (exit 3 when it had already finished)."""
    with _errors(as_json), _client(ctx, url, api_key) as client:
        view = client.cancel(job_id)
        _echo_json(view) if as_json else _print_view(view)


@jobs_app.command("wait")
def jobs_wait(
    ctx: typer.Context,
    job_id: JobIdArg,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = None,
    quiet: QuietOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Wait for a job with a progress bar, then print its summary (exit 5 if it failed or was cancelled)."""
    with _errors(as_json), _client(ctx, url, api_key) as client:
        view = _wait(client, job_id, timeout, quiet)
        _echo_json(view) if as_json else typer.echo(view.summary or "")


def _out_console() -> Console:
    out_console = Console(highlight=False)
    if not out_console.is_terminal:  # piped: no 80-column default squeezing the table
        out_console = Console(highlight=False, width=200)
    return out_console


def _estimate_table(est: Estimate) -> Table:
    table = Table(show_edge=False, show_header=False)
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("")
    pace = est.throughput
    rows = [
        ("route", est.mode),
        ("input tokens", str(est.input_tokens)),
        ("chunks", str(est.chunks)),
        ("model calls", f"{est.model_calls} (at most; {est.reduce_levels} reduce levels)"),
        ("queue ahead", "" if est.queue_ahead_calls is None else f"{est.queue_ahead_calls} model calls"),
        ("pace", "" if pace is None or pace.model_calls_per_s is None else f"{pace.model_calls_per_s:.3g} calls/s"),
        ("ETA", "unknown" if est.eta_s is None else f"{est.eta_s:g} s"),
        ("basis", est.eta_basis),
    ]
    for name, value in rows:
        if value:
            table.add_row(name, value)
    return table


def _jobs_table(jobs: list[JobView]) -> Table:
    table = Table(show_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True, min_width=36)  # never shortened: it is what the other commands take
    for col in ("STATUS", "PROGRESS", "CREATED", "FINISHED", "EXPIRES"):
        table.add_column(col, no_wrap=True)
    for v in jobs:
        status = f"{v.status.value} (expired)" if v.expired else v.status.value
        when = v.expired_at if v.expired else v.expires_at
        table.add_row(
            v.id,
            status,
            f"{v.progress.chunks_done}/{v.progress.chunks_total}",
            v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            v.finished_at.strftime("%Y-%m-%d %H:%M:%S") if v.finished_at else "",
            when.strftime("%Y-%m-%d %H:%M:%S") if when else "",
        )
    return table


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    status: Annotated[JobStatus | None, typer.Option("--status", help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100, help="Jobs per page (1-100).")] = 20,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow the cursors: every job, not one page.")] = False,
    cursor: Annotated[str | None, typer.Option("--cursor", help="Start at this next_cursor.")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """List your jobs, newest first, as a table (--json: the page, or with --all every job as one list)."""
    with _errors(as_json), _client(ctx, url, api_key) as client:
        if all_pages:
            jobs = list(client.iter_jobs(status=status, page_size=limit))
            next_cursor = None
        else:
            page = client.list(status=status, limit=limit, cursor=cursor)
            jobs, next_cursor = page.items, page.next_cursor
        if as_json:
            out = JobPage(items=jobs, next_cursor=next_cursor)
            _echo_json(out)
            return
        if not jobs:
            _note("no jobs")
            return
        _out_console().print(_jobs_table(jobs))
        if next_cursor:
            more = f"--status {status.value} " if status else ""
            _note(f"more: precis jobs list {more}--limit {limit} --cursor {next_cursor}  (or --all)")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(ExitCode.INTERRUPTED)
