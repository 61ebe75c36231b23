"""`make run`'s own supervisor (scripts/run.sh: honcho + scripts/respawn.sh on every Procfile line)
restarts what crashes: SIGKILL of the worker and the notifier mid-job, then of the batch Triton
mid-job and of the realtime Triton. Each one comes back (a new pid, ready again), the gateway keeps
answering all along, the accepted jobs still succeed and mail their reader once; then SIGTERM to
the script (Ctrl-C) stops everything and leaves no process behind.

The stack is the real one on allocated ports (devstack.launch_stack, as tests/e2e does), with
faults-sized timers: 128-token chunks and 16-token summaries (a job of many short model calls),
6 s leases (a killed worker's job is taken over quickly), 1 s first restart delay.
"""

from __future__ import annotations

import email
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from devstack import Proc, StackPorts, child_env, http_ok, launch_stack, port_open, wait_stack, wait_until
from tests.faults.conftest import doc

pytestmark = pytest.mark.faults

KEY = "precis-dev-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PARAGRAPH = (
    "The city council voted on Tuesday to extend the bike lane network by 40 kilometres over the next "
    "three years. Officials said cycling has risen by a quarter since 2020."
)


@dataclass
class Supervised:
    proc: Proc
    ports: StackPorts
    var: Path
    seen: set[int] = field(default_factory=set)  # every pid the stack ever had (for the orphan check)

    @property
    def url(self) -> str:
        return self.ports.url

    def tree(self) -> list[psutil.Process]:
        try:
            kids = psutil.Process(self.proc.p.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.seen.update(k.pid for k in kids)
        return kids

    def component(self, match: Callable[[list[str]], bool]) -> psutil.Process:
        """The one live process of the stack whose argv ``match``es (not its respawn.sh wrapper)."""
        found = []
        for p in self.tree():
            try:
                argv = p.cmdline()
            except psutil.Error:
                continue
            if argv and "respawn.sh" not in " ".join(argv[:2]) and match(argv):
                found.append(p)
        assert len(found) == 1, f"expected one process, found {[f.cmdline()[:4] for f in found]}"
        return found[0]

    def python_module(self, module: str) -> psutil.Process:
        return self.component(lambda a: a[1:3] == ["-m", module])

    def tritonserver(self, grpc_port: int) -> psutil.Process:
        return self.component(lambda a: a[0].endswith("/tritonserver") and f"--grpc-port={grpc_port}" in a)

    def submit(self, text: str) -> str:
        r = httpx.post(
            f"{self.url}/v1/summaries",
            json={"text": text, "mode": "async", "notify": {"email": "reader@example.com"}},
            headers=AUTH,
            timeout=60,
        )
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def view(self, job_id: str) -> dict:
        r = httpx.get(f"{self.url}/v1/summaries/{job_id}", headers=AUTH, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_running(self, job_id: str, chunks: int = 1, timeout: float = 180) -> None:
        def running() -> bool:
            v = self.view(job_id)
            assert v["status"] in ("queued", "running"), v
            return v["status"] == "running" and v["progress"]["chunks_done"] >= chunks

        wait_until(running, timeout, f"job {job_id} running with {chunks} chunk(s) done", self.proc)

    def wait_succeeded(self, job_id: str, timeout: float = 400) -> dict:
        out: dict = {}

        def done() -> bool:
            out.update(self.view(job_id))
            return out["status"] in ("succeeded", "failed", "cancelled")

        wait_until(done, timeout, f"job {job_id} terminal", self.proc, interval=1.0)
        assert out["status"] == "succeeded", out
        return out

    def mails_for(self, job_id: str, timeout: float = 90) -> int:
        def mine() -> int:
            return sum(
                email.message_from_bytes(p.read_bytes())["X-Precis-Job-Id"] == job_id
                for p in (self.var / "mail").glob("*.eml")
            )

        wait_until(lambda: mine() > 0, timeout, f"a mail for {job_id}", self.proc)
        time.sleep(3)  # a duplicate would come right behind
        return mine()


class GatewayProbe:
    """GET /healthz and a job view on the gateway every 0.5 s in a thread: every answer must be 200."""

    def __init__(self, st: Supervised, job_id: str) -> None:
        self.st, self.job_id = st, job_id
        self.answers: list[int | str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.st.url, timeout=5) as c:
            while not self._stop.is_set():
                for path in ("/healthz", f"/v1/summaries/{self.job_id}"):
                    try:
                        self.answers.append(c.get(path, headers=AUTH).status_code)
                    except httpx.HTTPError as exc:
                        self.answers.append(type(exc).__name__)
                self._stop.wait(0.5)

    def __enter__(self) -> GatewayProbe:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(10)
        bad = [a for a in self.answers if a != 200]
        assert len(self.answers) > 10 and not bad, f"the gateway did not keep answering: {bad[:10]}"


def kill_and_wait_back(st: Supervised, find: Callable[[], psutil.Process], ready_url: str, timeout: float) -> float:
    """SIGKILL the process ``find`` returns; until another process of it is up and ``ready_url``
    answers 200, and none of the killed one's children (a Triton's python backend stubs) is left.
    Returns the seconds that took."""
    old = find()
    name, kids = old.name(), old.children(recursive=True)
    old.send_signal(signal.SIGKILL)
    old.wait(10)
    t0 = time.monotonic()

    def back() -> bool:
        try:
            new = find()
        except AssertionError:
            return False
        return new.pid != old.pid and http_ok(ready_url)

    wait_until(back, timeout, f"a new {name} (old pid {old.pid}) ready at {ready_url}", st.proc)
    took = time.monotonic() - t0
    # A Triton's python stub notices its server is gone and leaves after its engine loop's current
    # step (a prefill of up to 2048 tokens, at SCHED_IDLE on a busy machine: seconds). Seen in
    # make test-faults: one stub still up the moment the new server was ready. Bounded at 30 s.
    _, alive = psutil.wait_procs(kids, timeout=30)
    left = [k.pid for k in alive if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"children of the killed {name} outlived it by 30 s: {left}"
    return took


@pytest.fixture(scope="module")
def sup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervised]:
    var = tmp_path_factory.mktemp("supervisor-var")
    env = child_env(
        var,
        PRECIS_SKIP_INSTALL="1",
        PRECIS_READY_TIMEOUT="600",
        # the probe reads the job twice a second, more than a tenant's default limit
        PRECIS_RATE_LIMIT_PER_MINUTE="1000000",
        PRECIS_CHUNK_TOKENS="128",
        PRECIS_CHUNK_SUMMARY_TOKENS="16",
        PRECIS_LEASE_TTL_S="6",
        PRECIS_SESSION_TIMEOUT_MS="6000",
        PRECIS_RETRY_BACKOFF_S="1",
        PRECIS_RETRY_BACKOFF_MAX_S="10",
        # a Triton restart (model load) takes 15-40 s here: enough attempts to outlast it
        PRECIS_MAX_ATTEMPTS="8",
        PRECIS_RESPAWN_DELAY_S="1",
    )
    ports = StackPorts.allocate()
    proc = launch_stack(ports, env, var / "stack.log")
    st = Supervised(proc, ports, var)
    try:
        wait_stack(proc, ports, 600)
        st.tree()
        yield st
    finally:
        if proc.alive():
            proc.p.send_signal(signal.SIGTERM)
            try:
                proc.p.wait(90)
            except Exception:  # noqa: BLE001
                proc.kill()
        proc.stop()


def test_worker_and_notifier_killed_mid_job_come_back_and_the_job_succeeds(sup: Supervised) -> None:
    job = sup.submit(doc(1, 900))
    sup.wait_running(job)
    worker_ready = f"http://127.0.0.1:{sup.ports.of('PRECIS_WORKER_PORT')}/readyz"
    notifier_ready = f"http://127.0.0.1:{sup.ports.of('PRECIS_NOTIFIER_PORT')}/readyz"
    with GatewayProbe(sup, job):
        t_w = kill_and_wait_back(sup, lambda: sup.python_module("worker"), worker_ready, 120)
        t_n = kill_and_wait_back(sup, lambda: sup.python_module("notifier"), notifier_ready, 120)
        view = sup.wait_succeeded(job)
    print(f"\nworker back in {t_w:.1f}s, notifier in {t_n:.1f}s; job {view['progress']}")
    assert sup.mails_for(job) == 1


def test_triton_killed_comes_back_batch_mid_job_and_realtime(sup: Supervised) -> None:
    job = sup.submit(doc(2, 900))
    sup.wait_running(job)
    p = sup.ports
    with GatewayProbe(sup, job):
        t_b = kill_and_wait_back(
            sup,
            lambda: sup.tritonserver(p.batch_triton_grpc),
            f"http://127.0.0.1:{p.batch_triton_http}/v2/health/ready",
            240,
        )
        t_r = kill_and_wait_back(
            sup, lambda: sup.tritonserver(p.triton_grpc), f"http://127.0.0.1:{p.triton_http}/v2/health/ready", 240
        )
        wait_until(lambda: http_ok(f"{sup.url}/readyz"), 60, "gateway /readyz after the realtime Triton's restart")
        # realtime answers again: 503/504 are allowed while the new server's first calls run on a
        # loaded 2-core machine (the 30 s deadline), nothing else
        answers: list[int] = []

        def realtime_ok() -> bool:
            r = httpx.post(f"{sup.url}/v1/summaries", json={"text": PARAGRAPH}, headers=AUTH, timeout=60)
            answers.append(r.status_code)
            assert r.status_code in (200, 503, 504), r.text
            return r.status_code == 200 and r.json()["mode"] == "realtime"

        wait_until(realtime_ok, 180, "a realtime summary after the realtime Triton's restart", sup.proc, interval=2)
        view = sup.wait_succeeded(job)
    print(f"\nbatch Triton back in {t_b:.1f}s, realtime Triton in {t_r:.1f}s; job {view['progress']}")
    print(f"realtime answers after the restart: {answers}")
    assert sup.mails_for(job) == 1


def test_sigterm_stops_everything_and_leaves_no_process(sup: Supervised) -> None:
    sup.tree()
    pids = set(sup.seen)
    sup.proc.p.send_signal(signal.SIGTERM)  # Ctrl-C on `make run`: the script alone
    sup.proc.p.wait(90)
    time.sleep(1)
    left = []
    for pid in pids:
        try:
            q = psutil.Process(pid)
            if q.status() != psutil.STATUS_ZOMBIE:
                left.append((pid, q.cmdline()[:3]))
        except psutil.NoSuchProcess:
            pass
    # and no process of this stack at all (every child has its PRECIS_VAR_DIR), reparented or not
    strays = [
        (q.pid, (q.info["cmdline"] or [])[:3])
        for q in psutil.process_iter(["environ", "cmdline"])
        if q.pid != os.getpid() and (q.info["environ"] or {}).get("PRECIS_VAR_DIR") == str(sup.var)
    ]
    p = sup.ports
    open_ports = [x for x in [*p.services, *p.triton, p.kafka, p.smtp] if port_open(x)]
    assert not left and not strays and not open_ports, f"left: {left}, strays: {strays}, open ports: {open_ports}"
