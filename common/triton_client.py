"""Async client for the ``summarizer`` Triton model (tritonclient gRPC aio), used by realtime_svc and the worker.

One client per process, created by the lifespan and reused by every request (one HTTP/2 channel).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def _classify(exc: InferenceServerException) -> TritonFailure:
    status = (exc.status() or "").upper()
    msg = exc.message() or str(exc)
    low = msg.lower()
    if "queue" in low and ("maximum" in low or "full" in low or "exceeds" in low):
        return TritonFailure("overloaded", msg)
    if "timeout" in low and "request" in low:
        return TritonFailure("overloaded", msg)
    if "DEADLINE" in status or "deadline" in low:
        return TritonFailure("deadline", msg)
    if "INVALID_ARG" in status or "INVALID" in status:
        return TritonFailure("invalid", msg)
    if "UNAVAILABLE" in status or "connect" in low or "unavailable" in low:
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
    ]


class SummarizerClient:
    def __init__(self, url: str, model: str) -> None:
        self.url = url
        self.model = model
        self.client = grpcclient.InferenceServerClient(url=url, channel_args=channel_args())

    async def close(self) -> None:
        await self.client.close()

    async def ready(self, timeout_s: float = 1.0) -> bool:
        try:
            return bool(await self.client.is_model_ready(self.model, client_timeout=timeout_s))
        except Exception:  # noqa: BLE001 - readiness only reports
            return False

    async def summarize(
        self, text: str, max_tokens: int, language: str = "auto", *, timeout_s: float, request_id: str = ""
    ) -> TritonResult:
        inputs = [
            grpcclient.InferInput("TEXT", [1, 1], "BYTES"),
            grpcclient.InferInput("MAX_TOKENS", [1, 1], "INT32"),
            grpcclient.InferInput("LANGUAGE", [1, 1], "BYTES"),
        ]
        inputs[0].set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
        inputs[1].set_data_from_numpy(np.array([[max_tokens]], dtype=np.int32))
        inputs[2].set_data_from_numpy(np.array([[language.encode()]], dtype=np.object_))
        outputs = [grpcclient.InferRequestedOutput(n) for n in ("SUMMARY", "INPUT_TOKENS", "OUTPUT_TOKENS", "MODEL")]
        try:
            res = await self.client.infer(
                self.model, inputs, outputs=outputs, client_timeout=timeout_s, request_id=request_id,
                # Server-side queue timeout too, so a request we stopped waiting for is dropped there.
                timeout=int(timeout_s * 1_000_000),
            )
        except InferenceServerException as exc:
            raise _classify(exc) from None
        summary = res.as_numpy("SUMMARY").reshape(-1)[0]
        model = res.as_numpy("MODEL").reshape(-1)[0]
        return TritonResult(
            summary=summary.decode() if isinstance(summary, bytes) else str(summary),
            input_tokens=int(res.as_numpy("INPUT_TOKENS").reshape(-1)[0]),
            output_tokens=int(res.as_numpy("OUTPUT_TOKENS").reshape(-1)[0]),
            model=model.decode() if isinstance(model, bytes) else str(model),
        )
