"""Async client for the ``summarizer`` Triton model (tritonclient gRPC aio), used by realtime_svc and the worker.

One client per process, created by the lifespan and reused by every request (one HTTP/2 channel).
The model is decoupled (in-flight batching, model_repository/summarizer/1/model.py), which unary
ModelInfer refuses: each call is one bidirectional ModelStreamInfer stream on that channel,
carrying one request and its one final response (``summarize_stream``: the request's partial
responses, its text as generated, before that). A stream works for a non-decoupled model too.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import KeepAliveOptions
from tritonclient.utils import InferenceServerException


@dataclass
class TritonResult:
    summary: str
    input_tokens: int
    output_tokens: int
    model: str  # the model Triton serves (its MODEL output), reported to callers


class TritonFailure(Exception):
    """A Triton call failed; ``kind`` says how (for HTTP mapping and metrics)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # unavailable | overloaded | deadline | invalid | internal


# model.py starts its error messages with one of these (a stream's error carries no status code)
_TAG = re.compile(r"^(?:\[request id: [^\]]*\] )?\[(invalid|internal|unavailable|cancelled)\] ")
_TAG_KINDS = {"invalid": "invalid", "internal": "internal", "unavailable": "unavailable", "cancelled": "unavailable"}
# Triton's own INVALID_ARG errors (inputs that do not match the model config), which a stream
# reports by message only
_CORE_INVALID = ("unexpected inference input", "unexpected shape", "unexpected datatype", "expected datatype")


def _classify(exc: InferenceServerException) -> TritonFailure:
    status = (exc.status() or "").upper()
    msg = exc.message() or str(exc)
    tagged = _TAG.match(msg)
    if tagged:
        # the model's own error: its kind, and the message as the model meant it (tag removed)
        return TritonFailure(_TAG_KINDS[tagged.group(1)], msg[tagged.end() :])
    low = msg.lower()
    if "queue" in low and ("maximum" in low or "full" in low or "exceeds" in low):
        return TritonFailure("overloaded", msg)
    if "timeout" in low and "request" in low:
        return TritonFailure("overloaded", msg)
    if "DEADLINE" in status or "deadline" in low:
        return TritonFailure("deadline", msg)
    if "INVALID_ARG" in status or "INVALID" in status or any(s in low for s in _CORE_INVALID):
        return TritonFailure("invalid", msg)
    if "UNAVAILABLE" in status or "connect" in low or "unavailable" in low:
        # not reached (a pod that just stopped listening, or none yet): the call was not run
        return TritonFailure("unavailable", msg)
    if "unknown model" in low or "no available versions" in low or "is not ready" in low:
        # The server answered but has no model: it unloads on SIGTERM before it exits (a pod
        # being replaced) or has not loaded it yet. Unavailable, and this connection (pinned to
        # that server by the Service's conntrack entry) must be replaced: see SummarizerClient.
        return TritonFailure("unavailable", msg)
    return TritonFailure("internal", msg)


def channel_args(max_reconnect_backoff_ms: int = 1000) -> list[tuple[str, int]]:
    """tritonclient's default channel options plus a short reconnect backoff: gRPC's default
    backoff grows to 120 s, so after a Triton restart calls would keep failing fast (503) for
    up to two minutes although the server is back. Calls never wait for a connection
    (wait_for_ready is off): while Triton is down they fail at once with UNAVAILABLE."""
    ka = KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.max_receive_message_length", 2**31 - 1),
        ("grpc.keepalive_time_ms", ka.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", ka.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", ka.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", ka.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", min(200, max_reconnect_backoff_ms)),
        ("grpc.min_reconnect_backoff_ms", min(200, max_reconnect_backoff_ms)),
        ("grpc.max_reconnect_backoff_ms", max_reconnect_backoff_ms),
        # Each channel owns its connections. With gRPC's default global subchannel pool a new
        # channel to the same address reuses the open TCP connection of an older channel, so
        # SummarizerClient._reconnect kept talking to the Triton pod that was unloading its
        # model (found by make k8s-e2e: 12 of 56 requests failed at the end of a helm upgrade).
        ("grpc.use_local_subchannel_pool", 1),
    ]


class SummarizerClient:
    def __init__(self, url: str, model: str) -> None:
        self.url = url
        self.model = model
        self.client = grpcclient.InferenceServerClient(url=url, channel_args=channel_args())
        self._last_reconnect = 0.0
        self._retired: list[grpcclient.InferenceServerClient] = []

    async def _reconnect(self, failed: grpcclient.InferenceServerClient) -> None:
        """A new channel, so a new TCP connection that the Service routes to a ready server. The
        old channel's connection stays pinned to the server it was opened to, which may be a pod
        that is unloading its model on the way out (Triton keeps answering "unknown model" until
        it exits). Calls already in flight on the old channel finish on it."""
        if self.client is not failed:  # another call already replaced it
            return
        if time.monotonic() - self._last_reconnect < 1.0:  # an outage must not churn channels
            return
        self._last_reconnect = time.monotonic()
        self.client = grpcclient.InferenceServerClient(url=self.url, channel_args=channel_args())
        self._retired.append(failed)
        # closed once the calls still on it are done (none outlives its own timeout)
        asyncio.get_running_loop().call_later(60, lambda: asyncio.ensure_future(self._close_retired(failed)))

    async def _close_retired(self, client: grpcclient.InferenceServerClient) -> None:
        if client in self._retired:
            self._retired.remove(client)
            await client.close()

    async def close(self) -> None:
        for old in list(self._retired):
            await self._close_retired(old)
        await self.client.close()

    async def ready(self, timeout_s: float = 1.0) -> bool:
        try:
            return bool(await self.client.is_model_ready(self.model, client_timeout=timeout_s))
        except Exception:  # noqa: BLE001 - readiness only reports
            return False

    def _request(
        self, text: str, max_tokens: int, language: str, timeout_s: float, request_id: str, stream: bool
    ) -> dict[str, Any]:
        inputs = [
            grpcclient.InferInput("TEXT", [1, 1], "BYTES"),
            grpcclient.InferInput("MAX_TOKENS", [1, 1], "INT32"),
            grpcclient.InferInput("LANGUAGE", [1, 1], "BYTES"),
        ]
        inputs[0].set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
        inputs[1].set_data_from_numpy(np.array([[max_tokens]], dtype=np.int32))
        inputs[2].set_data_from_numpy(np.array([[language.encode()]], dtype=np.object_))
        names = (*_FINAL_OUTPUTS, "TOKEN_TEXT") if stream else _FINAL_OUTPUTS
        request: dict[str, Any] = {
            "model_name": self.model,
            "inputs": inputs,
            "outputs": [grpcclient.InferRequestedOutput(n) for n in names],
            "request_id": request_id,
            # Server-side queue timeout too, so a request we stopped waiting for is dropped there.
            "timeout": int(timeout_s * 1_000_000),
        }
        if stream:
            request["parameters"] = {"stream": True}  # model.py: partial TOKEN_TEXT responses
        return request

    async def _failed(self, client: grpcclient.InferenceServerClient, exc: InferenceServerException) -> TritonFailure:
        failure = _classify(exc)
        if failure.kind == "unavailable":  # see _classify: this connection must be replaced
            await self._reconnect(client)
        return failure

    async def summarize(
        self, text: str, max_tokens: int, language: str = "auto", *, timeout_s: float, request_id: str = ""
    ) -> TritonResult:
        request = self._request(text, max_tokens, language, timeout_s, request_id, stream=False)
        client = self.client
        try:
            res = await _one_response(client, request, timeout_s)
        except InferenceServerException as exc:
            raise await self._failed(client, exc) from None
        return _result(res)

    async def summarize_stream(
        self, text: str, max_tokens: int, language: str = "auto", *, timeout_s: float, request_id: str = ""
    ) -> AsyncGenerator[str | TritonResult]:
        """The summary as it is generated: text deltas (``str``, the model's raw output, in order),
        then one :class:`TritonResult` (its ``summary`` cleaned, the same as :meth:`summarize`
        gives). Failures raise :class:`TritonFailure`, also after some text. Leaving the
        iteration early (``aclose``, a cancelled task) cancels the request, which frees its row."""
        request = self._request(text, max_tokens, language, timeout_s, request_id, stream=True)
        client = self.client
        try:
            async with contextlib.aclosing(_responses(client, request, timeout_s)) as responses:
                async for res in responses:
                    if not _partial(res):
                        yield _result(res)
                        return
                    yield _text(res, "TOKEN_TEXT")
        except InferenceServerException as exc:
            raise await self._failed(client, exc) from None


_FINAL_OUTPUTS = ("SUMMARY", "INPUT_TOKENS", "OUTPUT_TOKENS", "MODEL")


def _partial(res: Any) -> bool:
    """A streamed request's partial response (TOKEN_TEXT, no SUMMARY), not its final one."""
    return res.get_output("SUMMARY") is None and res.get_output("TOKEN_TEXT") is not None


def _text(res: Any, name: str) -> str:
    value = res.as_numpy(name).reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else str(value)


def _result(res: Any) -> TritonResult:
    return TritonResult(
        summary=_text(res, "SUMMARY"),
        input_tokens=int(res.as_numpy("INPUT_TOKENS").reshape(-1)[0]),
        output_tokens=int(res.as_numpy("OUTPUT_TOKENS").reshape(-1)[0]),
        model=_text(res, "MODEL"),
    )


async def _one_response(client: grpcclient.InferenceServerClient, request: dict[str, Any], timeout_s: float) -> Any:
    """Send ``request`` on a new stream and return its final response (an InferResult); its
    error, a gRPC failure (UNAVAILABLE, DEADLINE_EXCEEDED: the stream's deadline is the call's
    timeout) or a stream that ends without an answer raise InferenceServerException."""
    async with contextlib.aclosing(_responses(client, request, timeout_s)) as responses:
        async for res in responses:
            if not _partial(res):
                return res
    raise AssertionError("unreachable: _responses ends with its final response or raises")


async def _responses(
    client: grpcclient.InferenceServerClient, request: dict[str, Any], timeout_s: float
) -> AsyncGenerator[Any]:
    """Send ``request`` on a new stream and yield its responses (InferResults): a streamed
    request's partial ones (no SUMMARY), then the final one, after which the stream is closed.
    Errors raise InferenceServerException (see :func:`_one_response`).

    The request side stays open until the final response is in: the server sees one request and
    no half-close while it generates. Leaving early (the caller's task cancelled, the deadline,
    the iteration closed) cancels the stream, which Triton turns into ``request.is_cancelled()``
    for the model, so the in-flight scheduler frees the row."""
    answered = asyncio.Event()

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield request
        await answered.wait()

    stream = client.stream_infer(requests(), stream_timeout=timeout_s)
    finished = False
    try:
        while True:
            try:
                result, error = await stream.__anext__()
            except StopAsyncIteration:
                raise InferenceServerException(
                    msg="the stream ended without a response", status="StatusCode.INTERNAL"
                ) from None
            if error is not None:
                raise error
            if _partial(result):
                yield result
                continue
            # Finish the stream cleanly: end the request side (half-close) and read the server's
            # end (it closes once nothing is pending). A stream cancelled after its answer kept the
            # model referenced in Triton 2.51, so a SIGTERM'd server waited its whole exit timeout
            # to unload.
            answered.set()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    async for _ in stream:
                        pass
                    finished = True
            yield result
            return
    except grpc.RpcError as exc:
        raise _grpc_error(exc) from None
    finally:
        answered.set()
        if not finished:
            stream.cancel()


def _grpc_error(exc: grpc.RpcError) -> InferenceServerException:
    """tritonclient's form of a gRPC failure (what its unary calls raise): status StatusCode.X."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return InferenceServerException(msg=details or str(code), status=str(code))
