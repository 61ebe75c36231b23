"""``Client`` (sync) and ``AsyncClient`` for the Précis API."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, overload

import httpx
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from precis_client import _core
from precis_client._core import PollSchedule, RetryPolicy
from precis_client.errors import (
    Conflict,
    JobCancelled,
    JobFailed,
    PrecisTransportError,
    RateLimited,
    ServiceUnavailable,
    WaitTimeout,
)
from precis_client.models import AsyncAccepted, Estimate, JobPage, JobStatus, JobView, Mode, RealtimeSummary

JobRef = str | AsyncAccepted | JobView
ProgressCallback = Callable[[JobView], Any]
AsyncProgressCallback = Callable[[JobView], Awaitable[Any] | Any]


class _Base:
    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        retry: RetryPolicy | None,
        poll: PollSchedule | None,
        headers: dict[str, str] | None,
    ) -> None:
        self.base_url, self._api_key = _core.resolve_config(base_url, api_key)
        self.retry = retry or RetryPolicy()
        self._poll = poll or PollSchedule()
        self._headers = {
            "Authorization": f"Bearer {self._api_key}",
            "User-Agent": _core.user_agent(),
            "Accept": "application/json, application/problem+json",
            **(headers or {}),
        }

    def _wait_fn(self) -> Callable[[RetryCallState], float]:
        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            return self.retry.delay(state.attempt_number, exc)

        return wait

    def _retry_kwargs(self) -> dict[str, Any]:
        return {
            "stop": stop_after_attempt(max(1, self.retry.max_attempts)),
            "wait": self._wait_fn(),
            "retry": retry_if_exception(self.retry.should_retry),
            "reraise": True,
        }

    def _schedule(self) -> PollSchedule:
        return PollSchedule(self._poll.initial, self._poll.factor, self._poll.maximum)

    @staticmethod
    def _finish(view: JobView, raise_on_failure: bool) -> JobView:
        if raise_on_failure and view.status == JobStatus.failed:
            raise JobFailed(view)
        if raise_on_failure and view.status == JobStatus.cancelled:
            raise JobCancelled(view)
        return view


class Client(_Base):
    """Synchronous client.

    >>> with Client() as c:  # PRECIS_URL / PRECIS_API_KEY
    ...     print(c.summarize(text, wait=True).summary)
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = _core.DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        poll: PollSchedule | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, retry, poll, headers)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport)
        self._sleep: Callable[[float], None] = time.sleep

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, *, attempts: list[int] | None = None, **kw: Any) -> httpx.Response:
        def once() -> httpx.Response:
            if attempts is not None:
                attempts.append(1)
            return _core.check(self._http.request(method, path, **kw))

        try:
            for attempt in Retrying(sleep=lambda s: self._sleep(s), **self._retry_kwargs()):
                with attempt:
                    return once()
        except httpx.TransportError as exc:
            raise PrecisTransportError(f"{method} {self.base_url}{path}: {exc!r}", cause=exc) from exc
        raise AssertionError("unreachable")

    @overload
    def summarize(
        self,
        text: str,
        *,
        mode: Mode | str = ...,
        max_summary_tokens: int | None = ...,
        language: str | None = ...,
        email: str | None = ...,
        webhook: str | None = ...,
        metadata: dict[str, Any] | None = ...,
        idempotency_key: str | None = ...,
        wait: Literal[False] = ...,
        on_progress: ProgressCallback | None = ...,
        timeout: float | None = ...,
    ) -> RealtimeSummary | AsyncAccepted: ...

    @overload
    def summarize(
        self,
        text: str,
        *,
        mode: Mode | str = ...,
        max_summary_tokens: int | None = ...,
        language: str | None = ...,
        email: str | None = ...,
        webhook: str | None = ...,
        metadata: dict[str, Any] | None = ...,
        idempotency_key: str | None = ...,
        wait: Literal[True],
        on_progress: ProgressCallback | None = ...,
        timeout: float | None = ...,
    ) -> RealtimeSummary | JobView: ...

    def summarize(
        self,
        text: str,
        *,
        mode: Mode | str = Mode.auto,
        max_summary_tokens: int | None = None,
        language: str | None = None,
        email: str | None = None,
        webhook: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        wait: bool = False,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> RealtimeSummary | AsyncAccepted | JobView:
        """Submit ``text``. A realtime answer is returned as is; an async job as its ``AsyncAccepted``, or with
        ``wait=True`` as its final ``JobView`` (see :meth:`wait` for ``on_progress``, ``timeout`` and errors).

        One Idempotency-Key (``idempotency_key`` or a new random one) is sent with every retry of this call,
        so a retried submit never creates a second job."""
        body = _core.submit_body(
            text,
            mode=mode,
            max_summary_tokens=max_summary_tokens,
            language=language,
            email=email,
            webhook=webhook,
            metadata=metadata,
        )
        key = idempotency_key or _core.new_idempotency_key()
        resp = self._request("POST", _core.SUMMARIES, json=body, headers={"Idempotency-Key": key})
        result = _core.parse_submit(resp, key)
        if wait and isinstance(result, AsyncAccepted):
            return self.wait(result, on_progress=on_progress, timeout=timeout)
        return result

    def estimate(
        self,
        text: str,
        *,
        mode: Mode | str = Mode.auto,
        max_summary_tokens: int | None = None,
        language: str | None = None,
        email: str | None = None,
        webhook: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Estimate:
        """What submitting ``text`` would cost, creating nothing (``POST /v1/summaries?dry_run=true``): the
        route, input tokens, chunks, model calls and an ETA (``eta_s`` None when the server has no recent
        pace, ``eta_basis`` says why). The same arguments as :meth:`summarize`, checked the same way: an
        invalid request raises the problem a submit would."""
        body = _core.submit_body(
            text,
            mode=mode,
            max_summary_tokens=max_summary_tokens,
            language=language,
            email=email,
            webhook=webhook,
            metadata=metadata,
        )
        return _core.parse_estimate(self._request("POST", _core.SUMMARIES, json=body, params=_core.DRY_RUN))

    def get(self, job: JobRef) -> JobView:
        """The job's current view (``GET /v1/summaries/{id}``)."""
        return _core.parse_job(self._request("GET", f"{_core.SUMMARIES}/{_core.job_id_of(job)}"))

    def cancel(self, job: JobRef) -> JobView:
        """Cancel a queued or running job (``DELETE``); raises ``Conflict`` when it had already finished."""
        jid = _core.job_id_of(job)
        attempts: list[int] = []
        try:
            return _core.parse_job(self._request("DELETE", f"{_core.SUMMARIES}/{jid}", attempts=attempts))
        except Conflict:
            # A retried DELETE whose first try went through finds the job cancelled: that is success.
            if len(attempts) > 1:
                view = self.get(jid)
                if view.status in (JobStatus.cancelled, JobStatus.cancelling):
                    return view
            raise

    def wait(
        self,
        job: JobRef,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
        raise_on_failure: bool = True,
    ) -> JobView:
        """Poll the job until it is finished and return its final view.

        ``on_progress(view)`` is called with the first view and each time status or chunks_done/chunks_total
        change. Polls back off while nothing changes and honour ``Retry-After`` (429/503). Raises ``WaitTimeout``
        after ``timeout`` seconds (the job goes on), ``JobFailed``/``JobCancelled`` when it did not succeed
        (unless ``raise_on_failure=False``)."""
        jid = _core.job_id_of(job)
        path = f"{_core.SUMMARIES}/{jid}"
        deadline = None if timeout is None else time.monotonic() + timeout
        schedule = self._schedule()
        last: tuple[str, int, int] | None = None
        view: JobView | None = None
        while True:
            retry_after: float | None = None
            changed = False
            try:
                resp = self._request("GET", path)
                retry_after = _core.parse_retry_after(resp.headers.get("retry-after"))
                view = _core.parse_job(resp)
                key = _core.progress_key(view)
                changed = key != last
                if changed:
                    last = key
                    if on_progress is not None:
                        on_progress(view)
                if view.terminal:
                    return self._finish(view, raise_on_failure)
            except (RateLimited, ServiceUnavailable) as exc:
                if exc.retry_after is None:
                    raise
                retry_after = exc.retry_after
            delay = schedule.next(changed, retry_after)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(jid, timeout or 0.0, view)
                delay = min(delay, remaining)
            self._sleep(delay)

    def list(
        self,
        *,
        status: JobStatus | str | None = None,
        created_after: datetime | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of this API key's jobs, newest first (``GET /v1/summaries``); ``limit`` 1-100 (server
        default 20). Pass ``page.next_cursor`` as ``cursor`` for the next page; it is None on the last."""
        params = _core.list_params(status, created_after, limit, cursor)
        return _core.parse_page(self._request("GET", _core.SUMMARIES, params=params))

    def iter_jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        created_after: datetime | None = None,
        page_size: int | None = None,
    ) -> Iterator[JobView]:
        """Every matching job, newest first, following the cursors page by page (lazily). Jobs created
        meanwhile are newer than those already seen, so none is skipped or yielded twice."""
        cursor: str | None = None
        while True:
            page = self.list(status=status, created_after=created_after, limit=page_size, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor


class AsyncClient(_Base):
    """Asynchronous client (same methods as :class:`Client`, as coroutines)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = _core.DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        poll: PollSchedule | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, retry, poll, headers)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, *, attempts: list[int] | None = None, **kw: Any) -> httpx.Response:
        async def once() -> httpx.Response:
            if attempts is not None:
                attempts.append(1)
            return _core.check(await self._http.request(method, path, **kw))

        async def sleep(s: float) -> None:
            await self._sleep(s)

        try:
            async for attempt in AsyncRetrying(sleep=sleep, **self._retry_kwargs()):
                with attempt:
                    return await once()
        except httpx.TransportError as exc:
            raise PrecisTransportError(f"{method} {self.base_url}{path}: {exc!r}", cause=exc) from exc
        raise AssertionError("unreachable")

    @overload
    async def summarize(
        self,
        text: str,
        *,
        mode: Mode | str = ...,
        max_summary_tokens: int | None = ...,
        language: str | None = ...,
        email: str | None = ...,
        webhook: str | None = ...,
        metadata: dict[str, Any] | None = ...,
        idempotency_key: str | None = ...,
        wait: Literal[False] = ...,
        on_progress: AsyncProgressCallback | None = ...,
        timeout: float | None = ...,  # noqa: ASYNC109 - same API as Client (a deadline for the polling)
    ) -> RealtimeSummary | AsyncAccepted: ...

    @overload
    async def summarize(
        self,
        text: str,
        *,
        mode: Mode | str = ...,
        max_summary_tokens: int | None = ...,
        language: str | None = ...,
        email: str | None = ...,
        webhook: str | None = ...,
        metadata: dict[str, Any] | None = ...,
        idempotency_key: str | None = ...,
        wait: Literal[True],
        on_progress: AsyncProgressCallback | None = ...,
        timeout: float | None = ...,  # noqa: ASYNC109 - same API as Client (a deadline for the polling)
    ) -> RealtimeSummary | JobView: ...

    async def summarize(
        self,
        text: str,
        *,
        mode: Mode | str = Mode.auto,
        max_summary_tokens: int | None = None,
        language: str | None = None,
        email: str | None = None,
        webhook: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        wait: bool = False,
        on_progress: AsyncProgressCallback | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - same API as Client (a deadline for the polling)
    ) -> RealtimeSummary | AsyncAccepted | JobView:
        """See :meth:`Client.summarize`."""
        body = _core.submit_body(
            text,
            mode=mode,
            max_summary_tokens=max_summary_tokens,
            language=language,
            email=email,
            webhook=webhook,
            metadata=metadata,
        )
        key = idempotency_key or _core.new_idempotency_key()
        resp = await self._request("POST", _core.SUMMARIES, json=body, headers={"Idempotency-Key": key})
        result = _core.parse_submit(resp, key)
        if wait and isinstance(result, AsyncAccepted):
            return await self.wait(result, on_progress=on_progress, timeout=timeout)
        return result

    async def estimate(
        self,
        text: str,
        *,
        mode: Mode | str = Mode.auto,
        max_summary_tokens: int | None = None,
        language: str | None = None,
        email: str | None = None,
        webhook: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Estimate:
        """See :meth:`Client.estimate`."""
        body = _core.submit_body(
            text,
            mode=mode,
            max_summary_tokens=max_summary_tokens,
            language=language,
            email=email,
            webhook=webhook,
            metadata=metadata,
        )
        return _core.parse_estimate(await self._request("POST", _core.SUMMARIES, json=body, params=_core.DRY_RUN))

    async def get(self, job: JobRef) -> JobView:
        return _core.parse_job(await self._request("GET", f"{_core.SUMMARIES}/{_core.job_id_of(job)}"))

    async def cancel(self, job: JobRef) -> JobView:
        jid = _core.job_id_of(job)
        attempts: list[int] = []
        try:
            return _core.parse_job(await self._request("DELETE", f"{_core.SUMMARIES}/{jid}", attempts=attempts))
        except Conflict:
            if len(attempts) > 1:
                view = await self.get(jid)
                if view.status in (JobStatus.cancelled, JobStatus.cancelling):
                    return view
            raise

    async def wait(
        self,
        job: JobRef,
        *,
        on_progress: AsyncProgressCallback | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - same API as Client (a deadline for the polling)
        raise_on_failure: bool = True,
    ) -> JobView:
        """See :meth:`Client.wait`; ``on_progress`` may be a plain function or a coroutine function."""
        jid = _core.job_id_of(job)
        path = f"{_core.SUMMARIES}/{jid}"
        deadline = None if timeout is None else time.monotonic() + timeout
        schedule = self._schedule()
        last: tuple[str, int, int] | None = None
        view: JobView | None = None
        while True:
            retry_after: float | None = None
            changed = False
            try:
                resp = await self._request("GET", path)
                retry_after = _core.parse_retry_after(resp.headers.get("retry-after"))
                view = _core.parse_job(resp)
                key = _core.progress_key(view)
                changed = key != last
                if changed:
                    last = key
                    if on_progress is not None:
                        res = on_progress(view)
                        if inspect.isawaitable(res):
                            await res
                if view.terminal:
                    return self._finish(view, raise_on_failure)
            except (RateLimited, ServiceUnavailable) as exc:
                if exc.retry_after is None:
                    raise
                retry_after = exc.retry_after
            delay = schedule.next(changed, retry_after)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(jid, timeout or 0.0, view)
                delay = min(delay, remaining)
            await self._sleep(delay)

    async def list(
        self,
        *,
        status: JobStatus | str | None = None,
        created_after: datetime | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JobPage:
        """See :meth:`Client.list`."""
        params = _core.list_params(status, created_after, limit, cursor)
        return _core.parse_page(await self._request("GET", _core.SUMMARIES, params=params))

    async def iter_jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        created_after: datetime | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[JobView]:
        """See :meth:`Client.iter_jobs` (``async for job in client.iter_jobs(): ...``)."""
        cursor: str | None = None
        while True:
            page = await self.list(status=status, created_after=created_after, limit=page_size, cursor=cursor)
            for job in page.items:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor
