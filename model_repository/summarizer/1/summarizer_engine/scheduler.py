"""In-flight (continuous) batching: the engine loop behind the decoupled Triton model.

What TensorRT-LLM calls in-flight batching and vLLM's scheduler does, on this project's step API
(:meth:`BaseEngine.start` / ``step`` / ``release``): one background thread owns the engine and
runs decode steps back to back. Between two steps it

1. admits waiting rows into free slots, first come first served (each admission is a prefill of
   that row alone, so the running rows pause for it: a long prompt stalls them once);
2. ends the rows of cancelled requests (``Job.is_cancelled``, polled at most every
   ``cancel_poll_s``: in Triton each poll is a round trip to the server process);
3. runs one step for every running row; a row that finishes leaves the batch at once and, when it
   was its request's last row, the request is answered right then, not when the batch drains.

A request ("job") may carry several rows (a client batch); it is answered once, when all of them
are done, with all its results, or once with an error: its own bad row or its cancellation never
touches another job, and a failed step (the engine raised) fails only the jobs that were running
in it. At most ``max_rows`` rows run; the rest wait. ``wait_for_room`` is the backpressure that
keeps the waiting list short (model.py blocks ``execute`` on it, so further requests stay in
Triton's own queue, where its queue policy - size limit, timeouts, REJECT - applies as before).

Token streaming: every step's tokens go to ``Job.on_token`` before any row of that step is
answered (model.py sends a streamed request's partial responses from there, so they always
precede its final one).

No Triton import: model.py passes callbacks, and tests drive it with the real engine in process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .base import BaseEngine, Prepared, Result, Row

LOG = logging.getLogger("precis.summarizer.scheduler")


def _never() -> bool:
    return False


@dataclass(eq=False)
class Job:
    """One request: its rows and how to answer it. Exactly one of ``on_done`` / ``on_error`` is
    called, once, from the engine loop's thread (or from ``stop``)."""

    items: list[Prepared]
    on_done: Callable[[list[Result]], None]
    on_error: Callable[[str, str], None]  # (kind, message); kind: cancelled | internal | unavailable
    is_cancelled: Callable[[], bool] = _never
    on_token: Callable[[int, int], None] | None = None  # (row index in the job, token id), per step
    results: list[Result | None] = field(init=False)
    admitted: int = field(default=0, init=False)  # items started so far (admission is in order)
    rows: dict[Row, int] = field(default_factory=dict, init=False)  # running row -> item index
    answered: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.items)


class InflightScheduler:
    def __init__(
        self,
        engine: BaseEngine,
        max_rows: int | None = None,
        log: Callable[[str], None] | None = None,
        on_step: Callable[[int], None] | None = None,
        cancel_poll_s: float = 0.1,
    ) -> None:
        self.engine = engine
        self.max_rows = min(max_rows or engine.config.max_batch, engine.config.max_batch)
        self._log = log or LOG.info
        self._on_step = on_step  # rows in each step (metrics)
        self.cancel_poll_s = cancel_poll_s
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()  # jobs with items not started yet (the head may be partly started)
        self._running: list[Job] = []  # jobs whose items are all started, some still running
        self._rows_waiting = 0  # items of _waiting not started
        self._rows_running = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_cancel_poll = 0.0
        self.steps = 0  # decode steps run (stats)
        # seconds spent per part of the loop since the last stats line (stats_every_s)
        self.stats_every_s = 30.0
        self._times = {"step": 0.0, "admit": 0.0, "cancel_poll": 0.0, "on_step": 0.0, "answer": 0.0}
        self._stats_since = time.monotonic()

    # ------------------------------------------------------------------ callers' side
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="precis-engine-loop", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._stopping:
                stopping = True
            else:
                stopping = False
                self._waiting.append(job)
                self._rows_waiting += len(job.items)
                self._cond.notify_all()
        if stopping:
            self._answer_error(job, "unavailable", "the summarizer model is unloading")

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Block while more rows are running or waiting than ``max_rows``: the rows beyond that
        (at most one ``execute`` call's requests) wait here, anything further in Triton's queue."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._stopping or self._rows_running + self._rows_waiting <= self.max_rows, timeout
            )

    def load(self) -> tuple[int, int]:
        """(rows running, rows waiting)."""
        with self._cond:
            return self._rows_running, self._rows_waiting

    def stop(self, reason: str = "the summarizer model is unloading") -> None:
        """Stop the loop after its current step; every request not answered yet gets an
        ``unavailable`` error (exactly once: the loop has stopped touching them)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            left = list(self._running) + list(self._waiting)
            self._running.clear()
            self._waiting.clear()
            self._rows_waiting = self._rows_running = 0
        for job in left:
            self._answer_error(job, "unavailable", reason)
        self.engine.reset()

    # ------------------------------------------------------------------ the engine loop
    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._waiting or self._running)
                if self._stopping:
                    return
            try:
                t0 = time.perf_counter()
                self._admit()
                t1 = time.perf_counter()
                self._poll_cancelled()
                t2 = time.perf_counter()
                self._times["admit"] += t1 - t0
                self._times["cancel_poll"] += t2 - t1
                if self.engine.active_rows():
                    self._step()
                self._stats()
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                self._log(f"summarizer engine loop error (continuing): {_format_exc()}")
                time.sleep(0.05)

    def _admit(self) -> None:
        """Start waiting items, oldest first, while the engine has free rows. A job whose item
        cannot start (a bad row) fails alone; the loop goes on with the next one."""
        while True:
            with self._cond:
                if not self._waiting or self.engine.free_rows() <= 0 or self._rows_running >= self.max_rows:
                    return
                job = self._waiting[0]
            if job.admitted == 0 and _cancelled(job):
                self._drop(job, "cancelled", "the request was cancelled")
                continue
            index = job.admitted
            try:
                row = self.engine.start(job.items[index])
            except Exception as exc:  # noqa: BLE001 - this job's failure only
                self._drop(job, "internal", f"generation failed: {exc}")
                continue
            with self._cond:
                job.rows[row] = index
                job.admitted += 1
                self._rows_waiting -= 1
                self._rows_running += 1
                if job.admitted == len(job.items):
                    self._waiting.popleft()
                    self._running.append(job)
                self._cond.notify_all()

    def _stats(self) -> None:
        now = time.monotonic()
        if now - self._stats_since < self.stats_every_s:
            return
        parts = " ".join(f"{k}={v:.2f}s" for k, v in self._times.items())
        self._log(f"summarizer engine loop, last {now - self._stats_since:.0f}s: steps={self.steps} {parts}")
        self._times = dict.fromkeys(self._times, 0.0)
        self._stats_since = now

    def _poll_cancelled(self) -> None:
        now = time.monotonic()
        if now - self._last_cancel_poll < self.cancel_poll_s:
            return
        self._last_cancel_poll = now
        with self._cond:
            jobs = list(self._running) + list(self._waiting)
        for job in jobs:
            if _cancelled(job):
                self._drop(job, "cancelled", "the request was cancelled")

    def _step(self) -> None:
        n = self.engine.active_rows()
        t0 = time.perf_counter()
        try:
            out = self.engine.step()
        except Exception as exc:  # noqa: BLE001 - fail the jobs of this batch, keep serving
            self._log(f"summarizer step failed: {_format_exc()}")
            with self._cond:
                jobs = [j for j in list(self._running) + list(self._waiting) if j.rows]
            for job in jobs:
                self._drop(job, "internal", f"generation failed: {exc}")
            self.engine.reset()
            return
        t1 = time.perf_counter()
        self._times["step"] += t1 - t0
        self.steps += 1
        if self._on_step is not None:
            try:
                self._on_step(n)
            except Exception:  # noqa: BLE001 - metrics never stop generation
                pass
        t2 = time.perf_counter()
        self._times["on_step"] += t2 - t1
        if out.tokens:
            owners = self._owners()
            for row, tok in out.tokens:
                job = owners.get(row)
                if job is not None and job.on_token is not None:
                    try:
                        job.on_token(job.rows[row], tok)
                    except Exception:  # noqa: BLE001
                        pass
        if not out.finished:
            return
        owners = self._owners()
        complete: list[Job] = []
        with self._cond:
            for row in out.finished:
                job = owners.get(row)
                if job is None:
                    continue
                job.results[job.rows.pop(row)] = row.result
                self._rows_running -= 1
                if job.admitted == len(job.items) and not job.rows and job in self._running:
                    self._running.remove(job)
                    complete.append(job)
            self._cond.notify_all()
        for job in complete:
            self._answer(job)
        self._times["answer"] += time.perf_counter() - t2

    def _owners(self) -> dict[Row, Job]:
        with self._cond:
            return {row: job for job in list(self._running) + list(self._waiting) for row in job.rows}

    def _drop(self, job: Job, kind: str, message: str) -> None:
        """End ``job`` early: release its running rows, forget it, answer it with an error."""
        if kind == "cancelled":
            self._log(f"summarizer: request cancelled, {len(job.rows)} running row(s) freed")
        for row in list(job.rows):
            self.engine.release(row)
        with self._cond:
            self._rows_running -= len(job.rows)
            job.rows.clear()
            if job in self._running:
                self._running.remove(job)
            if job in self._waiting:
                self._waiting.remove(job)
                self._rows_waiting -= len(job.items) - job.admitted
            self._cond.notify_all()
        self._answer_error(job, kind, message)

    def _answer(self, job: Job) -> None:
        if job.answered:
            return
        job.answered = True
        try:
            job.on_done([r for r in job.results if r is not None])
        except Exception:  # noqa: BLE001 - a failed send concerns that request only
            self._log(f"summarizer: sending a response failed: {_format_exc()}")

    def _answer_error(self, job: Job, kind: str, message: str) -> None:
        if job.answered:
            return
        job.answered = True
        try:
            job.on_error(kind, message)
        except Exception:  # noqa: BLE001
            self._log(f"summarizer: sending an error response failed: {_format_exc()}")


def _cancelled(job: Job) -> bool:
    try:
        return bool(job.is_cancelled())
    except Exception:  # noqa: BLE001 - a failed poll is not a cancellation
        return False


def _format_exc() -> str:
    import traceback

    return traceback.format_exc()
