"""The live stack's OpenAPI document generates a working client (openapi-python-client), so the
document cannot drift from what the API really answers: realtime summary, async submit + get +
cancel, and problems (401, 404, 422) parsed as the generated ``Problem`` model. The client raises
on any status the document does not list for the operation."""

from __future__ import annotations

import importlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from common.problems import PROBLEM_JSON, type_uri
from tests.unit.test_openapi_document import assert_document_complete

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "precis_openapi_client"  # not precis_client: that name is the SDK's (sdk/)
PARAGRAPH = (
    "The city council voted on Tuesday to extend the bike lane network by 40 kilometres over the next "
    "three years. Officials said cycling has risen by a quarter since 2020, and that the new lanes will "
    "connect the university district with the central station."
)


@pytest.fixture(scope="module")
def live_doc(stack) -> dict:
    r = httpx.get(f"{stack.url}/openapi.json", timeout=30)
    assert r.status_code == 200
    return r.json()


@pytest.fixture(scope="module")
def gen(live_doc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client generated from the live document, importable from a temporary directory."""
    out = tmp_path_factory.mktemp("openapi-client")
    spec = out / "openapi.json"
    spec.write_text(httpx.Response(200, json=live_doc).text)
    config = out / "config.yaml"
    # post_hooks: none (the default runs ruff on the output; formatting is not what is tested)
    config.write_text(
        f"project_name_override: precis-openapi-client\npackage_name_override: {PACKAGE}\npost_hooks: []\n"
    )
    gen_cli = Path(sys.executable).with_name("openapi-python-client")
    done = subprocess.run(
        [str(gen_cli), "generate", "--path", str(spec), "--config", str(config), "--meta", "none"]
        + ["--output-path", str(out / PACKAGE), "--fail-on-warning"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def api(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.api.summaries.{name}")


def models() -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.models")


def client(gen: ModuleType, stack, key: str | None = None):
    return gen.AuthenticatedClient(
        base_url=stack.url, token=key or stack.dev_key, raise_on_unexpected_status=True, timeout=httpx.Timeout(120)
    )


def long_text() -> str:
    book = (ROOT / "tests/data/book/pride_and_prejudice.txt").read_text()
    return " ".join(book.split(" ")[2000:6000])  # many chunks: still running when it is cancelled


def test_live_document_is_complete_and_is_the_gateways(live_doc) -> None:
    assert_document_complete(live_doc)
    from gateway.app import create_app

    assert live_doc == create_app().openapi()


def test_generated_client_gets_a_realtime_summary(gen, stack) -> None:
    m = models()
    with client(gen, stack) as c:
        r = api("create_summary").sync_detailed(
            client=c, body=m.SummaryRequest(text=PARAGRAPH, mode=m.Mode.REALTIME, max_summary_tokens=32)
        )
    assert r.status_code == 200, r.content
    assert isinstance(r.parsed, m.RealtimeSummary)
    assert r.parsed.mode == "realtime" and len(r.parsed.summary.split()) >= 3
    assert 0 < r.parsed.usage.output_tokens <= 32


def test_generated_client_submits_reads_and_cancels_a_job(gen, stack) -> None:
    m = models()
    key = f"openapi-{uuid.uuid4()}"
    with client(gen, stack) as c:
        sub = api("create_summary").sync_detailed(
            client=c,
            body=m.SummaryRequest(text=long_text(), mode=m.Mode.ASYNC, max_summary_tokens=16),
            idempotency_key=key,
        )
        assert sub.status_code == 202, sub.content
        accepted = sub.parsed
        assert isinstance(accepted, m.AsyncAccepted) and accepted.status == m.JobStatus.QUEUED
        assert sub.headers["location"] == accepted.status_url

        job_id = uuid.UUID(accepted.id)
        got = api("get_summary").sync_detailed(job_id, client=c)
        assert got.status_code == 200 and isinstance(got.parsed, m.JobView)
        assert got.parsed.id == accepted.id and got.parsed.status in (m.JobStatus.QUEUED, m.JobStatus.RUNNING)

        cancelled = api("cancel_summary").sync_detailed(job_id, client=c)
        assert cancelled.status_code == 200 and isinstance(cancelled.parsed, m.JobView)
        assert cancelled.parsed.status in (m.JobStatus.CANCELLED, m.JobStatus.CANCELLING)

        # the same key and body again: the same job, replayed
        again = api("create_summary").sync_detailed(
            client=c,
            body=m.SummaryRequest(text=long_text(), mode=m.Mode.ASYNC, max_summary_tokens=16),
            idempotency_key=key,
        )
        assert again.status_code == 202 and again.parsed.id == accepted.id
        assert again.headers["idempotent-replayed"] == "true"


def test_generated_client_parses_problems(gen, stack) -> None:
    m = models()
    with client(gen, stack, key="not-a-key") as c:
        r = api("get_summary").sync_detailed(uuid.uuid4(), client=c)
    assert r.status_code == 401 and r.headers["content-type"].startswith(PROBLEM_JSON)
    assert isinstance(r.parsed, m.Problem)
    assert r.parsed.type_ == type_uri("unauthorized") and r.parsed.status == 401 and r.parsed.detail

    with client(gen, stack) as c:
        r = api("create_summary").sync_detailed(client=c, body=m.SummaryRequest(text=PARAGRAPH, max_summary_tokens=513))
        assert r.status_code == 422 and isinstance(r.parsed, m.Problem)
        assert r.parsed.type_ == type_uri("validation-error") and r.parsed.instance == "/v1/summaries"
        assert [(e.field, e.type_) for e in r.parsed.errors] == [("max_summary_tokens", "less_than_equal")]

        r = api("get_summary").sync_detailed(uuid.uuid4(), client=c)
        assert r.status_code == 404 and isinstance(r.parsed, m.Problem)
        assert r.parsed.type_ == type_uri("not-found")

        # and the type leads to its documentation on the same gateway
        page = httpx.get(f"{stack.url}{r.parsed.type_}", timeout=30)
        assert page.status_code == 200 and '<h2 id="not-found">' in page.text
