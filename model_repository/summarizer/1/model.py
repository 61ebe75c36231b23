"""Triton python-backend model ``summarizer``: one text in, one summary out.

Inputs  (per request, batch dim first): TEXT [B,1] string, MAX_TOKENS [B,1] int32 (optional),
                                        LANGUAGE [B,1] string (optional: auto|en|zh|...).
Outputs (per request):                  SUMMARY [B,1] string, INPUT_TOKENS [B,1] int32,
                                        OUTPUT_TOKENS [B,1] int32, MODEL [B,1] string
                                        (the served model's name).
Streamed (request parameter ``"stream": true``, one row): partial responses TOKEN_TEXT [1,1]
string before the final one, each the text generated since the previous (see _TokenStream).

The model is decoupled (config.pbtxt: ``model_transaction_policy { decoupled: true }``): each
request is answered through its own response sender, exactly once, with one final response
(flag TRITONSERVER_RESPONSE_COMPLETE_FINAL) carrying the outputs or that request's error. Clients
call it with gRPC streaming (common/triton_client.py); plain ModelInfer and HTTP /infer refuse
decoupled models. Requests are validated one by one: a bad request gets its own INVALID_ARG
error and never fails the others.

Two schedulers (parameter/env ``scheduler``, summarizer_engine/config.py):

* ``inflight`` (default): ``execute`` validates its requests, hands them to
  ``summarizer_engine.scheduler.InflightScheduler`` and returns; the scheduler's engine loop
  decodes the running rows step by step, new requests join between two steps, and a request is
  answered the moment its rows finish. A cancelled request (``request.is_cancelled()``: the
  client closed its stream or its deadline passed) leaves at the next poll and frees its row.
  ``execute`` blocks only while more rows are held than ``max_batch_size`` (backpressure, so the
  overflow waits in Triton's queue under its queue policy).
  A streamed request gets each decode step's text as a partial response (TOKEN_TEXT) as soon as
  the step is done, then the same final response as unstreamed.
* ``static``: as before in-flight batching, ``execute`` generates its whole batch (formed by the
  dynamic batcher) in one ``generate`` call and answers every request when it is done. Used by
  the benchmark's comparison, and whenever the config is not decoupled (then it returns the
  responses from ``execute``, the non-decoupled way).

The engine (model loading, prompts, generation) is the ``summarizer_engine`` package next to
this file (Triton puts this directory on the stub's ``sys.path``); its ``config`` module
documents the parameters/env vars.
"""

from __future__ import annotations

import codecs
import json
import os
import threading
import time
import traceback

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF de-quantization progress bar

import numpy as np
import triton_python_backend_utils as pb_utils

from summarizer_engine import ConfigError, EngineConfig, InvalidInput, create_engine
from summarizer_engine.scheduler import InflightScheduler, Job

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _log_info(msg: str) -> None:
    pb_utils.Logger.log_info(msg)


# Error responses of a decoupled model reach a gRPC stream as their message only (the stream
# carries no status code), so each message starts with its code's tag: common/triton_client.py
# reads the kind from it (and strips it) where the unary call read the gRPC status.
_TAGS = {
    "INVALID_ARG": "[invalid]",
    "INTERNAL": "[internal]",
    "UNAVAILABLE": "[unavailable]",
    "CANCELLED": "[cancelled]",
}


def _error(message: str, code: str = "INVALID_ARG") -> pb_utils.InferenceResponse:
    err = pb_utils.TritonError(f"{_TAGS[code]} {message}", getattr(pb_utils.TritonError, code))
    return pb_utils.InferenceResponse(output_tensors=[], error=err)


def _rows(request, name: str):
    """Input tensor ``name`` as a flat list (one value per batch row), or None if absent."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    return tensor.as_numpy().reshape(-1).tolist()


def _as_str(value, name: str) -> str:
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{name} is not valid UTF-8") from None
    return str(value)


def _leave_with_the_server() -> None:
    """End this stub process as soon as its tritonserver is gone.

    The python backend runs the model in a stub process, a child of tritonserver. When the server
    dies (SIGKILL, the OOM killer), make test-faults twice saw its stub stay up more than 30 s
    after the restarted server was ready: still generating for requests nobody can receive, and
    holding a second copy of the model beside the new server's stub, on a machine this small.
    A daemon thread polls the parent pid (a stub whose parent died is re-parented) and leaves at
    once; no Triton call on the way out (its IPC goes to the dead server)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os.write(2, b"summarizer: tritonserver is gone; this python stub exits\n")
                os._exit(1)

    threading.Thread(target=watch, name="precis-server-watch", daemon=True).start()


class TritonPythonModel:
    def initialize(self, args):
        _leave_with_the_server()
        model_config = json.loads(args["model_config"])
        params = {key: value.get("string_value", "") for key, value in (model_config.get("parameters") or {}).items()}
        # The llama.cpp engine decodes up to max_batch sequences together: Triton's batch size.
        if not str(params.get("max_batch", "")).strip() and int(model_config.get("max_batch_size") or 0) > 0:
            params["max_batch"] = str(model_config["max_batch_size"])
        try:
            self.config = EngineConfig.from_sources(params, os.environ)
        except ConfigError as exc:
            raise pb_utils.TritonModelException(f"summarizer: bad configuration: {exc}") from None
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(model_config)
        self.scheduler_mode = self.config.scheduler
        if self.scheduler_mode == "inflight" and not self.decoupled:
            pb_utils.Logger.log_warn(
                "summarizer: scheduler=inflight needs model_transaction_policy { decoupled: true }; "
                "this config is not decoupled, so batches are static"
            )
            self.scheduler_mode = "static"
        self.engine = create_engine(self.config, log=_log_info)
        self.engine.load()
        self.model_id = self.engine.model_id.encode("utf-8")
        if self.config.warmup:
            self.engine.warmup()
        self._metrics = _BatchMetrics(model_config.get("name", "summarizer"), self.scheduler_mode)
        self.scheduler = None
        if self.scheduler_mode == "inflight":
            if not self.engine.supports_inflight:
                # transformers: no per-token step (HF generate runs a batch to its end), so rows
                # join at the next whole generation: static batching behind the step API
                _log_info(f"summarizer: engine {self.engine.name} joins rows between whole generations only")
            self.scheduler = InflightScheduler(self.engine, log=_log_info, on_step=self._metrics.batch)
            self.scheduler.start()
        _log_info(
            f"summarizer ready: instance={args.get('model_instance_name')} scheduler={self.scheduler_mode} "
            f"decoupled={self.decoupled} "
            f"load={self.engine.load_seconds:.1f}s warmup={self.engine.warmup_seconds:.1f}s"
        )

    def _parse(self, request):
        """Validate one request -> list of prepared items (one per batch row)."""
        texts = _rows(request, "TEXT")
        if not texts:
            raise InvalidInput("TEXT is required")
        max_tokens = _rows(request, "MAX_TOKENS")
        languages = _rows(request, "LANGUAGE")
        for name, values in (("MAX_TOKENS", max_tokens), ("LANGUAGE", languages)):
            if values is not None and len(values) != len(texts):
                raise InvalidInput(f"{name} has {len(values)} rows but TEXT has {len(texts)}")
        items = []
        for i, raw in enumerate(texts):
            text = _as_str(raw, "TEXT")
            mt = int(max_tokens[i]) if max_tokens is not None else None
            lang = _as_str(languages[i], "LANGUAGE") if languages is not None else None
            items.append(self.engine.prepare(text, mt, lang))
        return items

    def _response(self, results) -> pb_utils.InferenceResponse:
        summary = np.array([[r.summary.encode("utf-8")] for r in results], dtype=np.object_)
        n_in = np.array([[r.input_tokens] for r in results], dtype=np.int32)
        n_out = np.array([[r.output_tokens] for r in results], dtype=np.int32)
        model = np.array([[self.model_id]] * len(results), dtype=np.object_)
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("SUMMARY", summary),
                pb_utils.Tensor("INPUT_TOKENS", n_in),
                pb_utils.Tensor("OUTPUT_TOKENS", n_out),
                pb_utils.Tensor("MODEL", model),
            ]
        )

    def _parse_or_error(self, request):
        """(items, None) or (None, error response): a broken request must not fail the others."""
        try:
            return self._parse(request), None
        except InvalidInput as exc:
            return None, _error(str(exc))
        except Exception as exc:  # noqa: BLE001
            return None, _error(f"bad request: {exc}")

    def _stream_of(self, request, items, sender):
        """The token callback of a streamed request (request parameter ``"stream": true``), or None."""
        if not _wants_stream(request):
            return None
        if len(items) != 1:
            raise InvalidInput(f"a streamed request carries one text, got {len(items)} rows")
        return _TokenStream(self.engine, sender)

    def execute(self, requests):
        if self.scheduler is None:
            responses = self._execute_static(requests)
            if not self.decoupled:
                return responses
            for request, response in zip(requests, responses, strict=True):
                request.get_response_sender().send(response, flags=FINAL)
            return None
        for request in requests:
            sender = request.get_response_sender()
            items, error = self._parse_or_error(request)
            on_token = None
            if error is None:
                try:
                    on_token = self._stream_of(request, items, sender)
                except InvalidInput as exc:
                    error = _error(str(exc))
            if error is not None:
                sender.send(error, flags=FINAL)
                continue
            self.scheduler.submit(
                Job(
                    items=items,
                    on_done=lambda results, s=sender: s.send(self._response(results), flags=FINAL),
                    on_error=lambda kind, message, s=sender: s.send(_error(message, _CODES[kind]), flags=FINAL),
                    is_cancelled=request.is_cancelled,
                    on_token=on_token,
                )
            )
        # Backpressure: while more rows are held than max_batch_size, the next execute() call
        # waits, so requests beyond those stay in Triton's queue, under its queue policy
        # (max_queue_size, timeouts, REJECT -> UNAVAILABLE/503) instead of an unbounded list here.
        self.scheduler.wait_for_room()
        return None

    def _execute_static(self, requests):
        """One batched generate for the whole execute() batch; one response per request, in order."""
        t0 = time.perf_counter()
        responses = [None] * len(requests)
        batch, owners = [], []  # prepared items and the request index each belongs to
        for index, request in enumerate(requests):
            items, error = self._parse_or_error(request)
            if error is not None:
                responses[index] = error
                continue
            batch.extend(items)
            owners.extend([index] * len(items))

        if batch:
            try:
                results = self.engine.generate(batch)
            except Exception as exc:  # noqa: BLE001
                pb_utils.Logger.log_error(f"summarizer generation failed: {traceback.format_exc()}")
                for index in set(owners):
                    responses[index] = _error(f"generation failed: {exc}", "INTERNAL")
            else:
                self._metrics.batch(len(batch))
                per_request: dict[int, list] = {}
                for index, result in zip(owners, results, strict=True):
                    per_request.setdefault(index, []).append(result)
                for index, rows in per_request.items():
                    responses[index] = self._response(rows)
        if batch:
            _log_info(
                f"summarizer batch: requests={len(requests)} rows={len(batch)} "
                f"max_new={max(it.max_tokens for it in batch)} took={time.perf_counter() - t0:.2f}s"
            )
        return responses

    def finalize(self):
        if self.scheduler is not None:
            # every request still held is answered (UNAVAILABLE), exactly once
            self.scheduler.stop()
            self.scheduler = None
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()
        self.engine = None


_CODES = {"cancelled": "CANCELLED", "internal": "INTERNAL", "unavailable": "UNAVAILABLE"}


def _wants_stream(request) -> bool:
    """The request parameter ``stream`` (tritonclient: ``parameters={"stream": True}``)."""
    try:
        params = json.loads(request.parameters() or "{}")
    except (AttributeError, ValueError):
        return False
    return params.get("stream") is True


class _TokenStream:
    """A streamed request's partial responses: each token the engine loop reports (scheduler
    ``Job.on_token``, called between two decode steps) becomes text and is sent at once as
    TOKEN_TEXT. Tokens are byte-level BPE pieces, so a character can span two of them: the
    incremental UTF-8 decoder holds an incomplete sequence until the token that ends it, and a
    piece that completes no character sends nothing. The text is the model's raw output; the
    final response's SUMMARY is that text cleaned (summarizer_engine/text.py clean_summary)."""

    def __init__(self, engine, sender) -> None:
        self._engine = engine
        self._sender = sender
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def __call__(self, _row: int, token: int) -> None:
        text = self._utf8.decode(self._engine.token_bytes(token))
        if text:
            tensor = pb_utils.Tensor("TOKEN_TEXT", np.array([[text.encode("utf-8")]], dtype=np.object_))
            self._sender.send(pb_utils.InferenceResponse(output_tensors=[tensor]))


class _BatchMetrics:
    """Custom Triton metrics (on Triton's /metrics): how many rows were generated together.
    In-flight: one batch is one decode step; static: one generate call. Their ratio is the mean
    batch size, the in-flight counterpart of nv_inference_request_success / exec_count (which only
    counts execute() calls, each of which returns at once here)."""

    def __init__(self, model: str, scheduler: str) -> None:
        self._batches = self._rows = None
        try:
            labels = {"model": model, "scheduler": scheduler}
            # the families are kept too: a family that is garbage-collected leaves /metrics
            self._families = (
                pb_utils.MetricFamily(
                    name="precis_summarizer_batches_total",
                    description="engine batches (in-flight: decode steps; static: generate calls)",
                    kind=pb_utils.MetricFamily.COUNTER,
                ),
                pb_utils.MetricFamily(
                    name="precis_summarizer_batch_rows_total",
                    description="rows over all engine batches (divided by batches: the mean batch size)",
                    kind=pb_utils.MetricFamily.COUNTER,
                ),
            )
            self._batches = self._families[0].Metric(labels=labels)
            self._rows = self._families[1].Metric(labels=labels)
        except Exception as exc:  # noqa: BLE001 - metrics are optional (e.g. --allow-metrics=false)
            _log_info(f"summarizer: no custom metrics ({exc})")

    def batch(self, rows: int) -> None:
        if self._batches is not None and self._rows is not None:
            self._batches.increment(1)
            self._rows.increment(rows)
