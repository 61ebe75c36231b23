"""The ``llamacpp`` engine: llama.cpp (llama-cpp-python, in process) on the GGUF file.

By default its Q4_1 weights are stored once as f16 (same values, no new quantization error)
because llama.cpp's batched GEMM kernels (llamafile tinyBLAS) cover f16 but not Q4_1, which makes
a decode step of 8 rows far cheaper than 8 steps of one row (docs/performance.md). A batch is
decoded together through llama.cpp's batch API, one sequence id per row, with a non-unified KV
cache (each row attends to its own cells only); each row stops at its own budget or end-of-turn
token.

Batch invariance: prompts are prefilled one row at a time so a prompt is always cut into the
same ubatches; packing several prompts into one ubatch changed the kernel shapes and with them a
row's greedy output (tests/triton/test_engine_llamacpp.py holds it). Flash attention keeps the
decode steps invariant too (the comment in ``LlamaCppEngine.load`` says why).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .base import LOG, BaseEngine, Prepared, Result, Row, StepOutput
from .config import LLAMACPP_WEIGHTS, ConfigError, EngineConfig
from .text import clean_summary


class LlamaCppEngine(BaseEngine):
    """llama.cpp (llama-cpp-python's low-level API, in process) on a GGUF file.

    One context holds ``max_batch`` sequences, each with its own KV stream (``kv_unified=False``)
    of ``max_input_tokens + max_new_tokens_cap + 256`` cells rounded up to 256, with flash
    attention (which keeps rows batch-invariant: see ``load``). ``generate`` prefills each row's
    prompt on its own (in batches of up to ``n_batch`` tokens), then decodes one token per active row
    per ``llama_decode`` call; rows leave the batch at their end-of-turn token or budget. Greedy
    choice with the same per-row repetition penalty as the transformers engine (HF semantics:
    every token of the prompt and of the output so far)."""

    name = "llamacpp"
    TEMPLATE_MARGIN = 256  # chat template tokens around TEXT

    def __init__(self, config: EngineConfig, log: Callable[[str], None] | None = None):
        super().__init__(config, log)
        self.dtype = "gguf"
        self.extra_bufts = False
        self._L = None
        self._model = None
        self._ctx = None
        self._vocab = None
        self._mem = None
        self._batch = None
        self._template = None
        self.n_vocab = 0
        self.n_batch = 1024
        self.ctx_per_seq = 0
        self._active: list[Row] = []  # running rows of the step API, in admission order
        self._free_slots: list[int] = list(range(config.max_batch))

    def load(self) -> None:
        import llama_cpp as L

        t0 = time.perf_counter()
        cfg = self.config
        self._L = L
        _quiet_llama_logs(L)
        L.llama_backend_init()
        path = self._weights_file(L)
        mparams = L.llama_model_default_params()
        # ggml's CPU "extra buffer types" (weight repacking, and the AMX buffer that a wheel built
        # with -march=native enables on an AMX-capable Xeon) only for f16. With the AMX buffer,
        # the shipped Q4_1 weights summarized garbage on this project's Sapphire Rapids VMs (make
        # eval: ROUGE-L 5.9 instead of 16.1, Chinese 0.0; plain CPU buffer: sensible summaries
        # again), while f16 through it kept its quality (15.66) and its batched speed.
        self.extra_bufts = cfg.llamacpp_weights == "f16"
        mparams.use_extra_bufts = self.extra_bufts
        self._model = L.llama_model_load_from_file(path.encode(), mparams)
        if not self._model:
            raise ConfigError(f"llama.cpp could not load {cfg.model_path}")
        self._vocab = L.llama_model_get_vocab(self._model)
        self.n_vocab = L.llama_vocab_n_tokens(self._vocab)
        threads = cfg.threads or (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        )
        # a multiple of 256: flash attention pads each KV stream to 256 cells
        self.ctx_per_seq = -(-(cfg.max_input_tokens + cfg.max_new_tokens_cap + self.TEMPLATE_MARGIN) // 256) * 256
        cparams = L.llama_context_default_params()
        cparams.n_seq_max = cfg.max_batch
        cparams.n_ctx = self.ctx_per_seq * cfg.max_batch
        cparams.n_batch = self.n_batch
        cparams.n_ubatch = min(512, self.n_batch)
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        # one KV stream per row unless PRECIS_LLAMACPP_KV_UNIFIED=1 (config.py documents it)
        cparams.kv_unified = os.environ.get("PRECIS_LLAMACPP_KV_UNIFIED", "0") == "1"
        # Flash attention is what keeps rows batch-invariant in decode. Without it, attention
        # multiplies V by the softmax over n_kv cells, where n_kv is the longest KV stream of
        # *any* row in the step (padded to 32), and ggml's f16 dot product sums in SIMD steps of
        # 64 on AVX-512 (32 on AVX2) plus a scalar tail: a neighbour with a longer prompt moved
        # cells from the tail into the vector sums, the rounding changed, and a greedy token
        # flipped (tests/triton/test_engine_llamacpp.py, Q4_1 on an AVX-512 VM; on AVX2 n_kv
        # is always a whole number of steps, which is why it held there). The CPU flash-attention
        # kernel walks one query row's cells in order and skips masked ones, so the padding of
        # other rows never enters a row's sums (checked bitwise, per step, for every weight format).
        cparams.flash_attn = True
        cparams.no_perf = True
        self._ctx = L.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise ConfigError("llama.cpp could not create a context (out of memory?)")
        self._mem = L.llama_get_memory(self._ctx)
        self._batch = L.llama_batch_init(self.n_batch, 0, 1)

        raw = L.llama_model_chat_template(self._model, None)
        if not raw:
            raise ConfigError(f"{cfg.model_path}: the GGUF has no chat template (an instruct model is required)")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def _raise(message):
            raise ValueError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        self._template = env.from_string(raw.decode("utf-8"))
        self._special = {
            "bos_token": self._piece(L.llama_vocab_bos(self._vocab), special=True),
            "eos_token": self._piece(L.llama_vocab_eos(self._vocab), special=True),
        }
        stop = {t for t in range(self.n_vocab) if L.llama_vocab_is_eog(self._vocab, t)}
        for name in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):
            ids = self.tokenize(name, special=True)
            if len(ids) == 1:
                stop.add(ids[0])
        self.stop_ids = sorted(stop)
        self.load_seconds = time.perf_counter() - t0
        self._log(
            f"summarizer model loaded in {self.load_seconds:.1f}s: path={path} engine=llamacpp "
            f"(llama-cpp-python {getattr(L, '__version__', '?')}) device=cpu threads={threads} "
            f"extra_bufts={self.extra_bufts} "
            f"max_batch={cfg.max_batch} ctx_per_seq={self.ctx_per_seq} stop_ids={self.stop_ids} "
            f"max_input_tokens={cfg.max_input_tokens} default_max_tokens={cfg.default_max_tokens} "
            f"max_new_tokens_cap={cfg.max_new_tokens_cap} sources={cfg.sources}"
        )

    def _weights_file(self, L) -> str:
        cfg = self.config
        ftype = LLAMACPP_WEIGHTS[cfg.llamacpp_weights]
        if ftype is None:
            return cfg.model_path
        # restates common/paths.py (the one definition): the Triton image carries no common/
        cache = os.path.join(os.environ.get("PRECIS_CACHE") or os.path.expanduser("~/.cache/precis"), "models")
        st = os.stat(cfg.model_path)
        base = os.path.splitext(os.path.basename(cfg.model_path))[0]
        out = os.path.join(cache, f"{base}.{st.st_size}.{int(st.st_mtime)}.{cfg.llamacpp_weights}.gguf")
        if not os.path.exists(out):
            os.makedirs(cache, exist_ok=True)
            params = L.llama_model_quantize_default_params()
            params.ftype = ftype
            params.allow_requantize = True
            tmp = f"{out}.{os.getpid()}.tmp"
            rc = L.llama_model_quantize(cfg.model_path.encode(), tmp.encode(), params)
            if rc != 0:
                raise ConfigError(f"llama.cpp could not convert {cfg.model_path} to {cfg.llamacpp_weights} (rc={rc})")
            os.replace(tmp, out)
            self._log(f"summarizer: converted {cfg.model_path} to {cfg.llamacpp_weights}: {out}")
        return out

    def close(self) -> None:
        L = self._L
        if L is None:
            return
        if self._batch is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            L.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            L.llama_model_free(self._model)
            self._model = None

    # ---------------------------------------------------------------- tokens
    def tokenize(self, text: str, special: bool) -> list[int]:
        L = self._L
        data = text.encode("utf-8")
        n_max = len(data) + 16
        buf = (L.llama_token * n_max)()
        n = L.llama_tokenize(self._vocab, data, len(data), buf, n_max, False, special)
        if n < 0:  # buffer too small (cannot happen for byte-level BPE, but be safe)
            n_max = -n
            buf = (L.llama_token * n_max)()
            n = L.llama_tokenize(self._vocab, data, len(data), buf, n_max, False, special)
        return list(buf[:n])

    def _piece(self, token: int, special: bool = False) -> str:
        return self._piece_bytes(token, special).decode("utf-8", errors="replace")

    def _piece_bytes(self, token: int, special: bool = False) -> bytes:
        L = self._L
        buf = ctypes_buffer(64)
        n = L.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes_buffer(-n)
            n = L.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
        return bytes(buf.raw[:n])

    def token_bytes(self, token: int) -> bytes:
        return self._piece_bytes(token)

    def render(self, messages: list[dict[str, str]]) -> str:
        return self._template.render(messages=messages, add_generation_prompt=True, **self._special)

    def _decode(self, ids: list[int]) -> str:
        data = b"".join(self._piece_bytes(t) for t in ids)
        # a token budget can cut a multi-byte character: drop the incomplete tail
        return data.decode("utf-8", errors="ignore") if not _valid_utf8(data) else data.decode("utf-8")

    # ---------------------------------------------------------------- generation
    def _decode_batch(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """entries: (token, position, seq_id, want_logits), at most n_batch of them."""
        L, b = self._L, self._batch
        for i, (tok, pos, seq, want) in enumerate(entries):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = 1 if want else 0
        b.n_tokens = len(entries)
        rc = L.llama_decode(self._ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with {rc}")

    def _logits(self, i: int):
        import numpy as np

        ptr = self._L.llama_get_logits_ith(self._ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def generate(self, items: Sequence[Prepared]) -> list[Result]:
        """Static batching on the step API: start every row, step until all are done (in rounds
        of ``max_batch`` rows). Not while the in-flight scheduler has rows running."""
        if not items:
            return []
        if self._active:
            raise RuntimeError("generate() while rows of the step API are running")
        out: list[Result] = []
        step = self.config.max_batch
        for start in range(0, len(items), step):
            out.extend(self._generate(items[start : start + step]))
        return out

    def _generate(self, items: Sequence[Prepared]) -> list[Result]:
        self._L.llama_memory_clear(self._mem, True)
        rows = []
        try:
            for it in items:
                rows.append(self.start(it))
            while self._active:
                self.step()
        finally:
            self.reset()
        return [r.result for r in rows]  # type: ignore[misc]

    # ---------------------------------------------------------------- step API (in-flight batching)
    # One row is one llama.cpp sequence: its slot is its seq_id, so with the non-unified KV cache
    # its own KV stream. A row joining mid-flight is prefilled on its own, exactly as a static
    # batch prefills each row (the same ubatches whatever else runs); decode steps then carry one
    # token per running row, and flash attention keeps a row's sums independent of the others'
    # KV lengths (see ``load``). A row leaving frees its stream with llama_memory_seq_rm, which
    # also moves the stream's search head back to cell 0, so a later row in that slot gets the
    # same cells, in the same order, as in a fresh context (tests/triton/test_engine_llamacpp.py
    # checks joins and slot reuse against the row alone, token for token).
    supports_inflight = True

    def free_rows(self) -> int:
        return len(self._free_slots)

    def active_rows(self) -> int:
        return len(self._active)

    def start(self, item: Prepared) -> Row:
        """Prefill ``item``'s prompt into the lowest free slot (lowest: a static batch of n rows
        uses slots 0..n-1, as before the step API). Its first token is chosen by the next step."""
        if not self._free_slots:
            raise RuntimeError("no free row")
        if len(item.prompt_ids) + item.max_tokens > self.ctx_per_seq:
            raise RuntimeError(f"prompt of {len(item.prompt_ids)} tokens + {item.max_tokens} exceeds the KV budget")
        slot = self._free_slots.pop(0)
        try:
            # empty already (a leaving row freed it); a no-op that makes sure of it
            self._L.llama_memory_seq_rm(self._mem, slot, -1, -1)
            ids = item.prompt_ids
            logits = None
            # one row at a time, so a prompt is always split into the same ubatches whatever else is
            # in the batch (packing rows together changed the kernels' shapes and so the numbers)
            for s0 in range(0, len(ids), self.n_batch):
                chunk = [
                    (tok, s0 + j, slot, s0 + j == len(ids) - 1) for j, tok in enumerate(ids[s0 : s0 + self.n_batch])
                ]
                self._decode_batch(chunk)
                if chunk[-1][3]:
                    logits = self._logits(len(chunk) - 1)
        except BaseException:
            self._L.llama_memory_seq_rm(self._mem, slot, -1, -1)
            self._free_slots.append(slot)
            self._free_slots.sort()
            raise
        row = Row(item=item, slot=slot)
        row.state = _RowState(seen=set(ids), penalty=self.penalty_for(item.language), pos=len(ids), logits=logits)
        self._active.append(row)
        return row

    def step(self) -> StepOutput:
        """Choose each running row's next token from its pending logits (greedy, repetition
        penalty with HF semantics), end the rows that hit a stop token or their budget, then one
        ``llama_decode`` of one token per remaining row for the logits of the next step."""
        import numpy as np

        stop = set(self.stop_ids)
        tokens: list[tuple[Row, int]] = []
        finished: list[Row] = []
        feed: list[tuple[int, int, int, bool]] = []
        fed: list[Row] = []
        for row in self._active:
            st = row.state
            logits, st.logits = st.logits, None
            p = st.penalty
            if p != 1.0 and st.seen:
                idx = np.fromiter(st.seen, dtype=np.int64)
                vals = logits[idx]
                logits[idx] = np.where(vals < 0, vals * p, vals / p)
            tok = int(np.argmax(logits))
            if tok in stop:
                st.hit_eos = True
                finished.append(row)
                continue
            row.tokens.append(tok)
            st.seen.add(tok)
            tokens.append((row, tok))
            if len(row.tokens) >= row.item.max_tokens:
                finished.append(row)
                continue
            feed.append((tok, st.pos, row.slot, True))
            fed.append(row)
            st.pos += 1
        # finished rows leave before the decode: their slots are free for the next admissions
        for row in finished:
            cut = row.tokens
            truncated = not row.state.hit_eos and len(cut) >= row.item.max_tokens
            row.result = Result(clean_summary(self._decode(cut), truncated), row.item.input_tokens, len(cut))
            row.done = True
            self._free(row)
        if feed:
            self._decode_batch(feed)
            for i, row in enumerate(fed):
                row.state.logits = self._logits(i)
        return StepOutput(tokens, finished)

    def release(self, row: Row) -> None:
        if row in self._active:
            self._free(row)

    def reset(self) -> None:
        for row in list(self._active):
            self._free(row)
        self._L.llama_memory_clear(self._mem, True)
        self._free_slots = list(range(self.config.max_batch))

    def _free(self, row: Row) -> None:
        self._active.remove(row)
        self._L.llama_memory_seq_rm(self._mem, row.slot, -1, -1)
        self._free_slots.append(row.slot)
        self._free_slots.sort()


@dataclass
class _RowState:
    seen: set[int]  # prompt and output tokens so far (the repetition penalty's set)
    penalty: float
    pos: int  # position of the next token fed
    logits: Any  # logits for the row's next token (numpy, n_vocab), None while none are pending
    hit_eos: bool = False


def ctypes_buffer(n: int):
    import ctypes

    return ctypes.create_string_buffer(n)


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _quiet_llama_logs(L) -> None:
    """llama.cpp logs every tensor at load; keep warnings and errors only."""
    import ctypes

    @L.llama_log_callback
    def _cb(level, text, user_data):
        if level in (3, 4):  # GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR
            LOG.warning("llama.cpp: %s", text.decode("utf-8", errors="replace").rstrip())

    _quiet_llama_logs.callback = _cb  # keep a reference: llama.cpp calls it later
    L.llama_log_set(_cb, ctypes.c_void_p(0))
