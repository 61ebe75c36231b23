"""Triton python-backend model ``summarizer``: one text in, one summary out.

Inputs  (per request, batch dim first): TEXT [B,1] string, MAX_TOKENS [B,1] int32 (optional),
                                        LANGUAGE [B,1] string (optional: auto|en|zh|...).
Outputs (per request):                  SUMMARY [B,1] string, INPUT_TOKENS [B,1] int32,
                                        OUTPUT_TOKENS [B,1] int32, MODEL [B,1] string
                                        (the served model's name).

The dynamic batcher hands ``execute`` up to max_batch_size requests; they are validated one
by one (a bad request gets its own INVALID_ARG error and is left out of the batch) and the
good ones are generated together in one batched ``generate`` call. Exactly one response is
returned per request, in order. The engine (model loading, prompts, generation) is the
``summarizer_engine`` package next to this file (Triton puts this directory on the stub's
``sys.path``); its ``config`` module documents the parameters/env vars.
"""

from __future__ import annotations

import json
import os
import time
import traceback

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF de-quantization progress bar

import numpy as np
import triton_python_backend_utils as pb_utils

from summarizer_engine import ConfigError, EngineConfig, InvalidInput, create_engine


def _log_info(msg: str) -> None:
    pb_utils.Logger.log_info(msg)


def _error(message: str, code=None) -> pb_utils.InferenceResponse:
    code = pb_utils.TritonError.INVALID_ARG if code is None else code
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))


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


class TritonPythonModel:
    def initialize(self, args):
        model_config = json.loads(args["model_config"])
        params = {key: value.get("string_value", "") for key, value in (model_config.get("parameters") or {}).items()}
        # The llama.cpp engine decodes up to max_batch sequences together: Triton's batch size.
        if not str(params.get("max_batch", "")).strip() and int(model_config.get("max_batch_size") or 0) > 0:
            params["max_batch"] = str(model_config["max_batch_size"])
        try:
            self.config = EngineConfig.from_sources(params, os.environ)
        except ConfigError as exc:
            raise pb_utils.TritonModelException(f"summarizer: bad configuration: {exc}") from None
        self.engine = create_engine(self.config, log=_log_info)
        self.engine.load()
        self.model_id = self.engine.model_id.encode("utf-8")
        if self.config.warmup:
            self.engine.warmup()
        _log_info(
            f"summarizer ready: instance={args.get('model_instance_name')} "
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

    def execute(self, requests):
        t0 = time.perf_counter()
        responses = [None] * len(requests)
        batch, owners = [], []  # prepared items and the request index each belongs to
        for index, request in enumerate(requests):
            try:
                items = self._parse(request)
            except InvalidInput as exc:
                responses[index] = _error(str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - a broken request must not fail the batch
                responses[index] = _error(f"bad request: {exc}")
                continue
            batch.extend(items)
            owners.extend([index] * len(items))

        if batch:
            try:
                results = self.engine.generate(batch)
            except Exception as exc:  # noqa: BLE001
                pb_utils.Logger.log_error(f"summarizer generation failed: {traceback.format_exc()}")
                for index in set(owners):
                    responses[index] = _error(f"generation failed: {exc}", pb_utils.TritonError.INTERNAL)
            else:
                per_request: dict[int, list] = {}
                for index, result in zip(owners, results, strict=True):
                    per_request.setdefault(index, []).append(result)
                for index, rows in per_request.items():
                    summary = np.array([[r.summary.encode("utf-8")] for r in rows], dtype=np.object_)
                    n_in = np.array([[r.input_tokens] for r in rows], dtype=np.int32)
                    n_out = np.array([[r.output_tokens] for r in rows], dtype=np.int32)
                    model = np.array([[self.model_id]] * len(rows), dtype=np.object_)
                    responses[index] = pb_utils.InferenceResponse(
                        output_tensors=[
                            pb_utils.Tensor("SUMMARY", summary),
                            pb_utils.Tensor("INPUT_TOKENS", n_in),
                            pb_utils.Tensor("OUTPUT_TOKENS", n_out),
                            pb_utils.Tensor("MODEL", model),
                        ]
                    )
        if batch:
            _log_info(
                f"summarizer batch: requests={len(requests)} rows={len(batch)} "
                f"max_new={max(it.max_tokens for it in batch)} took={time.perf_counter() - t0:.2f}s"
            )
        return responses

    def finalize(self):
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()
        self.engine = None
