"""``POST /v1/summaries?dry_run=true`` in process: the gateway (httpx.ASGITransport) in front of the
real async_svc app over a real SQLite store migrated with Alembic, and the real realtime_svc app with
a scripted Triton (tests/unit/test_realtime_inprocess.py); no ports, no Kafka.

The estimate's numbers are checked against the worker's own code on the same text (common/chunking.py
``chunk_text``, worker/mapreduce.py ``summarize_document`` run with a stand-in model and store), its
ETA against jobs inserted with known timestamps; nothing is stored, no outbox row is written, and
validation answers the same problems as a real submit."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from async_svc.app import create_app as create_async_app
from async_svc.config import AsyncSettings
from async_svc.deps import State as AsyncState
from async_svc.intake import GroupCommitter
from common.appstate import set_state
from common.chunking import chunk_text
from common.migrate import upgrade
from common.outbox import OutboxRelay
from common.schemas import Estimate, JobParams, JobStatus
from common.store import Database, Job, OutboxMessage
from common.tokenization import TokenCounter
from gateway.config import hash_key
from gateway.deps import State
from realtime_svc.app import create_app as create_realtime_app
from realtime_svc.config import RealtimeSettings
from realtime_svc.deps import State as RealtimeState
from tests.asserts import assert_problem
from tests.unit.test_gateway_inprocess import ASYNC, AUTH, KEY, REALTIME, ASGIUpstream, gateway_client, settings
from tests.unit.test_realtime_inprocess import ScriptedTriton
from worker.mapreduce import summarize_document

ROOT = Path(__file__).resolve().parents[2]
BOOK = (ROOT / "tests/data/book/pride_and_prejudice.txt").read_text(encoding="utf-8")
# Small windows, so an excerpt of the book takes several reduce levels.
CHUNK_TOKENS = 128
SUMMARY_TOKENS = 32
REALTIME_MAX = 64
TEXT = BOOK[:12000]
SHORT = "The council voted to extend the bike lanes."


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


@dataclass
class Stack:
    client: httpx.AsyncClient
    db: Database
    triton: ScriptedTriton
    counter: TokenCounter

    async def dry(self, body: dict[str, Any], headers: dict[str, str] | None = None, **params: str) -> httpx.Response:
        return await self.client.post(
            "/v1/summaries", params={"dry_run": "true", **params}, json=body, headers={**AUTH, **(headers or {})}
        )

    async def rows(self) -> tuple[int, int]:
        async with self.db.session() as s:
            jobs = (await s.execute(select(func.count()).select_from(Job))).scalar_one()
            outbox = (await s.execute(select(func.count()).select_from(OutboxMessage))).scalar_one()
        return jobs, outbox

    async def insert(self, **values: Any) -> None:
        now = datetime.now(UTC)
        row: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "tenant": "someone",
            "params": JobParams(),
            "document": "x",
            "document_bytes": 1000,
            "request_hash": "h",
            "chunks_done": 0,
            "chunks_total": 0,
            "attempts": 1,
            "created_at": now - timedelta(hours=3),
            "updated_at": now,
        }
        row.update(values)
        async with self.db.transaction() as s:
            s.add(Job(**row))


async def make_stack(tmp_path: Path, counter: TokenCounter, **async_extra: Any) -> AsyncIterator[Stack]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'precis.db'}"
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    committer = GroupCommitter(db, max_batch=8)
    committer.start()
    async_app = create_async_app()
    relay = OutboxRelay(db, producer=None)  # type: ignore[arg-type]  # never started: no broker here
    set_state(async_app, AsyncState(AsyncSettings(env="test", database_url=url, **async_extra), db, relay, committer))
    triton = ScriptedTriton()
    rt_app = create_realtime_app()
    rt_settings = RealtimeSettings(env="test", realtime_max_input_tokens=REALTIME_MAX)
    set_state(rt_app, RealtimeState(rt_settings, triton, counter))  # type: ignore[arg-type]  # scripted

    upstream = ASGIUpstream({ASYNC: async_app, REALTIME: rt_app})
    gw_settings = settings(
        api_keys=SecretStr(json.dumps({hash_key(KEY): "acme"})),
        max_request_bytes=200_000,
        chunk_tokens=CHUNK_TOKENS,
        chunk_summary_tokens=SUMMARY_TOKENS,
        realtime_max_input_tokens=REALTIME_MAX,
    )
    state = State(gw_settings, upstream, counter)
    client = gateway_client(state)
    try:
        yield Stack(client, db, triton, counter)
    finally:
        await client.aclose()
        await upstream.aclose()
        await committer.stop()
        await db.close()


@pytest.fixture
async def stack(tmp_path: Path, counter: TokenCounter) -> AsyncIterator[Stack]:
    async for s in make_stack(tmp_path, counter):
        yield s


# ---- the worker's numbers ------------------------------------------------------------------


class FixedLengthModel:
    """A stand-in for the worker's ModelCaller: every summary is ``words`` one-token words."""

    def __init__(self, words: int | None) -> None:
        self.words = words
        self.calls: list[int] = []  # max_tokens of each call

    async def summarize(self, text: str, max_tokens: int, language: str, tenant: str = "") -> str:
        self.calls.append(max_tokens)
        return " ".join(["word"] * (self.words or max_tokens))


class MemoryStore:
    """A stand-in for the worker's JobStore: checkpoints in memory, the planned total recorded."""

    def __init__(self) -> None:
        self.saved: dict[int, dict[int, tuple[str, str]]] = {}
        self.totals: list[int] = []
        self.levels: set[int] = set()

    async def checkpoints(self, job_id: str, level: int) -> dict[int, tuple[str, str]]:
        self.levels.add(level)
        return dict(self.saved.get(level, {}))

    async def set_total(self, job_id: str, total: int, done: int) -> None:
        self.totals.append(total)

    async def save_chunk(self, job_id: str, level: int, idx: int, sha: str, summary: str) -> JobStatus:
        self.saved.setdefault(level, {})[idx] = (sha, summary)
        return JobStatus.running


async def worker_run(counter: TokenCounter, text: str, words: int | None) -> tuple[int, FixedLengthModel, MemoryStore]:
    model, store = FixedLengthModel(words), MemoryStore()
    _, total = await summarize_document(
        job_id="j",
        document=text,
        language="auto",
        final_tokens=256,
        store=store,  # type: ignore[arg-type]  # in-memory stand-in
        model=model,  # type: ignore[arg-type]  # fixed-length stand-in
        counter=counter,
        chunk_tokens=CHUNK_TOKENS,
        chunk_summary_tokens=SUMMARY_TOKENS,
    )
    return total, model, store


async def test_the_estimate_is_what_the_worker_does_with_the_same_text(stack: Stack) -> None:
    r = await stack.dry({"text": TEXT})
    assert r.status_code == 200, r.text
    est = Estimate.model_validate(r.json())
    assert est.dry_run is True and est.mode == "async"
    assert est.chunks == len(chunk_text(TEXT, stack.counter.tokenizer, CHUNK_TOKENS)) > 1
    assert est.input_tokens == stack.counter.count(TEXT)
    # the worker, its summaries at their full budget: exactly the planned calls, levels and total
    total, model, store = await worker_run(stack.counter, TEXT, None)
    assert est.model_calls == total == len(model.calls) == store.totals[-1]
    assert est.reduce_levels == max(store.levels) >= 2
    assert model.calls.count(SUMMARY_TOKENS) == est.model_calls - 1  # every call but the final one


async def test_shorter_summaries_make_at_most_the_estimated_calls(stack: Stack) -> None:
    est = Estimate.model_validate((await stack.dry({"text": TEXT})).json())
    total, model, _ = await worker_run(stack.counter, TEXT, 3)
    assert total == len(model.calls) <= est.model_calls


async def test_a_short_text_forced_async_is_one_chunk_one_call(stack: Stack) -> None:
    est = Estimate.model_validate((await stack.dry({"text": SHORT, "mode": "async"})).json())
    assert (est.mode, est.chunks, est.model_calls, est.reduce_levels) == ("async", 1, 1, 0)
    total, model, _ = await worker_run(stack.counter, SHORT, None)
    assert total == len(model.calls) == 1


async def test_realtime_route_counts_tokens_and_gives_no_eta(stack: Stack) -> None:
    r = await stack.dry({"text": SHORT})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["mode"] == "realtime" and doc["input_tokens"] == stack.counter.count(SHORT)
    assert (doc["chunks"], doc["model_calls"], doc["eta_s"], doc["throughput"]) == (1, 1, None, None)
    assert "realtime" in doc["eta_basis"]
    assert stack.triton.calls == []  # no model call was made


async def test_mode_auto_routes_a_long_text_async_like_a_submit(stack: Stack) -> None:
    assert (await stack.dry({"text": TEXT, "mode": "auto"})).json()["mode"] == "async"
    assert (await stack.dry({"text": TEXT[:200], "mode": "realtime"})).json()["mode"] == "realtime"


# ---- nothing happens -----------------------------------------------------------------------


async def test_a_dry_run_stores_nothing_and_ignores_the_idempotency_key(stack: Stack) -> None:
    before = await stack.rows()
    for body in ({"text": TEXT}, {"text": TEXT, "mode": "async", "notify": {"email": "me@example.com"}}):
        r = await stack.dry(body, headers={"Idempotency-Key": "k-1"})
        assert r.status_code == 200, r.text
        assert "location" not in r.headers
    assert await stack.rows() == before == (0, 0)
    # the key was not taken: a real submit with it and another body is accepted, not a 409
    r = await stack.client.post(
        "/v1/summaries", json={"text": TEXT[:5000], "mode": "async"}, headers={**AUTH, "Idempotency-Key": "k-1"}
    )
    assert r.status_code == 202, r.text
    assert await stack.rows() == (1, 1)


# ---- the ETA ---------------------------------------------------------------------------------


async def test_no_recent_job_means_no_eta_and_says_so(stack: Stack) -> None:
    # a job that succeeded two hours ago and a failed one are outside the pace
    now = datetime.now(UTC)
    await stack.insert(
        status=JobStatus.succeeded,
        chunks_total=50,
        chunks_done=50,
        started_at=now - timedelta(hours=2, minutes=5),
        finished_at=now - timedelta(hours=2),
    )
    await stack.insert(status=JobStatus.failed, chunks_total=9, started_at=now - timedelta(minutes=5), finished_at=now)
    est = Estimate.model_validate((await stack.dry({"text": TEXT})).json())
    assert est.eta_s is None and "no job succeeded in the last 3600 s" in est.eta_basis
    assert est.throughput is not None
    assert (est.throughput.jobs, est.throughput.model_calls, est.throughput.model_calls_per_s) == (0, 0, None)
    assert est.model_calls > 1  # the plan is known all the same


async def test_eta_from_recent_jobs_with_known_timestamps_and_the_queue_ahead(stack: Stack) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    # two overlapping runs in the window: busy 600 s (from -1000 to -400), 30 + 90 calls
    await stack.insert(
        status=JobStatus.succeeded,
        chunks_total=30,
        chunks_done=30,
        document_bytes=40_000,
        started_at=now - timedelta(seconds=1000),
        finished_at=now - timedelta(seconds=700),
    )
    await stack.insert(
        status=JobStatus.succeeded,
        chunks_total=90,
        chunks_done=90,
        document_bytes=80_000,
        started_at=now - timedelta(seconds=800),
        finished_at=now - timedelta(seconds=400),
    )
    # ahead: a running job with 12 of 20 calls left, a queued one not planned yet (12,000 bytes at
    # 120 calls / 120,000 bytes = 12 calls), a cancelling one (stops: not ahead)
    await stack.insert(status=JobStatus.running, chunks_total=20, chunks_done=8, started_at=now)
    await stack.insert(status=JobStatus.queued, document_bytes=12_000)
    await stack.insert(status=JobStatus.cancelling, chunks_total=40, chunks_done=1, started_at=now)
    est = Estimate.model_validate((await stack.dry({"text": TEXT})).json())
    assert est.throughput is not None
    assert (est.throughput.jobs, est.throughput.model_calls, est.throughput.busy_s) == (2, 120, 600.0)
    assert est.throughput.model_calls_per_s == pytest.approx(0.2)
    assert est.queue_ahead_calls == 12 + 12
    assert est.eta_s == pytest.approx(round((24 + est.model_calls) / 0.2, 1))
    assert "24 model calls queued ahead" in est.eta_basis and f"+ {est.model_calls} of this job" in est.eta_basis


async def test_queued_jobs_unknown_size_without_recent_jobs_leaves_the_queue_unknown(stack: Stack) -> None:
    await stack.insert(status=JobStatus.queued, document_bytes=12_000)
    est = Estimate.model_validate((await stack.dry({"text": TEXT})).json())
    assert est.queue_ahead_calls is None and est.eta_s is None


# ---- validation, as a submit ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["maybe", "2", "", "truee"])
async def test_a_dry_run_value_that_is_not_a_boolean_is_a_422_naming_it(stack: Stack, value: str) -> None:
    r = await stack.client.post("/v1/summaries", params={"dry_run": value}, json={"text": TEXT}, headers=AUTH)
    doc = assert_problem(r, 422, "validation-error")
    assert [e["field"] for e in doc["errors"]] == ["query.dry_run"]
    assert "boolean" in doc["detail"]
    assert await stack.rows() == (0, 0)


@pytest.mark.parametrize("value", ["false", "0"])
async def test_dry_run_false_is_a_real_submit(stack: Stack, value: str) -> None:
    r = await stack.client.post(
        "/v1/summaries", params={"dry_run": value}, json={"text": TEXT, "mode": "async"}, headers=AUTH
    )
    assert r.status_code == 202, r.text
    assert await stack.rows() == (1, 1)


async def same_problem(stack: Stack, body: dict[str, Any], status: int, type_: str) -> dict[str, Any]:
    real = await stack.client.post("/v1/summaries", json=body, headers=AUTH)
    dry = await stack.dry(body)
    a, b = assert_problem(real, status, type_), assert_problem(dry, status, type_)
    assert a == b
    return b


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": SHORT, "max_summary_tokens": 999}, "max_summary_tokens"),
        ({"text": "\u200b \n"}, "text"),
        ({"text": SHORT, "notify": {"webhook_url": "http://127.0.0.1/hook"}}, "notify.webhook_url"),
        ({"text": SHORT, "mode": "sideways"}, "mode"),
    ],
)
async def test_invalid_bodies_get_the_submits_422(stack: Stack, body: dict[str, Any], field: str) -> None:
    doc = await same_problem(stack, body, 422, "validation-error")
    assert doc["errors"][0]["field"] == field
    assert await stack.rows() == (0, 0)


async def test_notify_on_the_realtime_path_is_the_submits_422(stack: Stack) -> None:
    doc = await same_problem(stack, {"text": SHORT, "notify": {"email": "me@example.com"}}, 422, "validation-error")
    assert "notify" in doc["detail"]


async def test_too_long_for_realtime_is_the_same_413_as_realtime_svc(stack: Stack) -> None:
    doc = await same_problem(stack, {"text": TEXT[:3000], "mode": "realtime"}, 413, "text-too-long-for-realtime")
    assert doc["limit_tokens"] == REALTIME_MAX
    assert stack.triton.calls == []


async def test_over_async_svcs_document_limit_is_the_same_413(tmp_path: Path, counter: TokenCounter) -> None:
    async for s in make_stack(tmp_path, counter, max_document_bytes=5000):
        doc = await same_problem(s, {"text": TEXT}, 413, "text-too-large")
        assert doc["limit_bytes"] == 5000 and doc["size_bytes"] == len(TEXT.encode())
        assert await s.rows() == (0, 0)
        est = Estimate.model_validate((await s.dry({"text": TEXT[:4000]})).json())  # within the limit
        assert est.chunks >= 1


async def test_a_dry_run_needs_an_api_key(stack: Stack) -> None:
    r = await stack.client.post("/v1/summaries", params={"dry_run": "true"}, json={"text": TEXT})
    assert_problem(r, 401, "unauthorized")
