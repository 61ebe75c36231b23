"""Overload spill-over against real processes (issue #11 items 4 and 8): the whole `make run` stack
(scripts/run.sh: real Triton, Kafka, worker) on its own ports, with realtime_svc's in-flight cap
at 1 so one summary under way fills the realtime path. Meanwhile a short `mode=auto` text is
accepted as an async job (202 + Location, `route_reason: spilled_over`), the job succeeds through
Kafka and the worker, and `mode=realtime` is 503 `model-overloaded` + Retry-After.

Its own stack, not the session's (tests/e2e/conftest.py): the cap is a start-up setting, and at 1
it would starve the other end-to-end tests' realtime calls."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from devstack import child_env
from tests.asserts import assert_problem
from tests.e2e.conftest import Stack, running_stack

pytestmark = pytest.mark.e2e

SHORT = "The library will open on Sundays from March. The council approved the extra staff on Monday."
# a paragraph of a few hundred tokens: well under the routing threshold, seconds of CPU per summary
HOLD = " ".join(
    [
        "The regional transport authority published its annual report on Thursday, showing that "
        "ridership on the tram network rose by eleven percent while bus ridership fell slightly.",
        "Officials attributed the change to the new cross-town line and to longer evening hours.",
    ]
    * 6
)


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    var = tmp_path_factory.mktemp("spill-var")
    env = child_env(
        var,
        PRECIS_SKIP_INSTALL="1",
        PRECIS_READY_TIMEOUT="600",
        PRECIS_REALTIME_MAX_IN_FLIGHT="1",  # one summary under way fills the realtime path
    )
    with running_stack(var, env) as s:
        yield s


def realtime_in_flight(stack: Stack) -> float:
    port = stack.port_map.of("PRECIS_REALTIME_PORT")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    m = re.search(r"^precis_realtime_in_flight (\S+)$", text, re.M)
    return float(m[1]) if m else 0.0


class Holder:
    """Keeps realtime's one slot busy: two threads sending mode=realtime summaries back to back
    (one of them is always under way; the other's try in between is refused at once)."""

    def __init__(self, stack: Stack) -> None:
        self.stack, self.stop, self.served = stack, threading.Event(), 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        with httpx.Client(timeout=120) as c:
            while not self.stop.is_set():
                r = c.post(
                    f"{self.stack.url}/v1/summaries",
                    json={"text": HOLD, "mode": "realtime", "max_summary_tokens": 256},
                    headers=self.stack.auth(),
                )
                if r.status_code == 200:
                    self.served += 1
                elif r.status_code == 503:
                    time.sleep(0.02)

    def __enter__(self) -> Holder:
        for t in self.threads:
            t.start()
        deadline = time.monotonic() + 120
        while realtime_in_flight(self.stack) < 1:
            assert time.monotonic() < deadline, "realtime never got busy"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(180)


def test_a_full_realtime_path_spills_auto_to_a_job_and_keeps_realtime_503(small_stack: Stack) -> None:
    stack = small_stack
    url = f"{stack.url}/v1/summaries"
    key = {**stack.auth(), "Idempotency-Key": "e2e-spill-1"}
    with Holder(stack), httpx.Client(timeout=60) as c:
        # the slot frees for a moment between two holder summaries: a probe landing then is
        # served (200) and is tried again; the realtime path is busy nearly all the time
        spilled = None
        for _ in range(20):
            r = c.post(url, json={"text": SHORT}, headers=key)
            if r.status_code == 202:
                spilled = r
                break
            assert r.status_code == 200, r.text
            time.sleep(0.2)
        assert spilled is not None, "mode=auto was never spilled while realtime was full"
        doc = spilled.json()
        assert doc["mode"] == "async" and doc["status"] == "queued"
        assert doc["route_reason"] == "spilled_over" and doc["spill_reason"] == "realtime_at_capacity"
        assert spilled.headers["location"] == doc["status_url"]
        assert "precis-refused-before-start" not in spilled.headers

        # a retry with the same key (its 202 lost, say): the same job, whether or not realtime
        # has a free slot at that moment
        again = c.post(url, json={"text": SHORT}, headers=key)
        assert again.status_code == 202, again.text
        assert again.json()["id"] == doc["id"] and again.headers["idempotent-replayed"] == "true"

        refused = None
        for _ in range(20):
            r = c.post(url, json={"text": SHORT, "mode": "realtime"}, headers=stack.auth())
            if r.status_code == 503:
                refused = r
                break
            assert r.status_code == 200, r.text
            time.sleep(0.2)
        assert refused is not None, "mode=realtime was never refused while realtime was full"
        problem = assert_problem(refused, 503, "model-overloaded")
        assert int(refused.headers["retry-after"]) >= 1
        assert problem["instance"] == "/v1/summaries"
        assert "precis-refused-before-start" not in refused.headers

    # realtime is free again: a retry of the spilled request still gets its job, not a summary too
    late = httpx.post(url, json={"text": SHORT}, headers=key, timeout=60)
    assert late.status_code == 202 and late.json()["id"] == doc["id"], late.text

    metrics = httpx.get(f"{stack.url}/metrics", timeout=10).text
    m = re.search(r'^precis_gateway_spillover_total\{reason="realtime_at_capacity"\} (\S+)$', metrics, re.M)
    assert m and float(m[1]) >= 1, "spill-over not counted"

    # the spilled text is summarized as a job: Kafka, the worker, Triton
    deadline = time.monotonic() + 600
    while True:
        view = httpx.get(doc["status_url"], headers=stack.auth(), timeout=10).json()
        if view["status"] in ("succeeded", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, f"spilled job still {view['status']}"
        time.sleep(1)
    assert view["status"] == "succeeded", view
    assert view["summary"] and len(view["summary"].split()) >= 3
    print(f"\nspilled job summary: {view['summary']}")
