"""What every engine shares: the prepared item, the result, and :class:`BaseEngine`
(validation, language, prompt, warmup)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import EngineConfig, InvalidInput
from .text import CJK_LANGS, build_messages, normalize_language

LOG = logging.getLogger("precis.summarizer")

# Stands in for each message's content while the chat template renders (Unicode private-use
# characters: no template touches them), so the rendered prompt splits into the template's own
# text and the contents (see BaseEngine.prompt_ids).
CONTENT_MARK = "\ue000precis-content-{}\ue001"


@dataclass
class Prepared:
    prompt_ids: list[int]
    input_tokens: int  # tokens of TEXT itself (what routing/billing counts)
    max_tokens: int
    language: str


@dataclass
class Result:
    summary: str
    input_tokens: int
    output_tokens: int


@dataclass(eq=False)  # compared and hashed by identity: the scheduler keys its books by row
class Row:
    """One sequence of the running batch (the step API: :meth:`BaseEngine.start`,
    :meth:`BaseEngine.step`, :meth:`BaseEngine.release`)."""

    item: Prepared
    slot: int  # the engine's sequence slot (llama.cpp: the sequence id, so its KV stream)
    tokens: list[int] = field(default_factory=list)  # generated so far, stop token excluded
    done: bool = False
    result: Result | None = None  # set when done
    state: Any = field(default=None, repr=False)  # the engine's own per-row state


@dataclass
class StepOutput:
    """What one :meth:`BaseEngine.step` did: the token each row produced (in step order: what a
    token-streaming response would send) and the rows that finished (their ``result`` is set and
    their slot is already free)."""

    tokens: list[tuple[Row, int]]
    finished: list[Row]


class BaseEngine:
    """What every engine shares: validation, language, prompt, warmup. Subclasses provide
    ``load``, ``tokenize``, ``render`` and ``generate``.

    The step API (``start`` a row, ``step`` the running batch, ``release`` a row) is what the
    in-flight scheduler drives. The default here is static batching behind that interface: rows
    started since the last step are generated together by one whole :meth:`generate` call in
    the next ``step``, so a row can only join between two whole generations. The llama.cpp engine
    overrides it with real per-token steps (``supports_inflight``)."""

    name = "base"
    supports_inflight = False  # True: rows join and leave between single decode steps

    def __init__(self, config: EngineConfig, log: Callable[[str], None] | None = None):
        self.config = config
        self._log = log or LOG.info
        self.device = "cpu"
        self.dtype = "float32"
        self.stop_ids: list[int] = []
        self.load_seconds = 0.0
        self.warmup_seconds = 0.0
        self._step_rows: list[Row] = []  # the default step API's running rows

    @property
    def model_id(self) -> str:
        """The served model's name, returned with every summary (the realtime ``model`` field):
        the GGUF file's stem (it names the quantization shipped, e.g. ``SmolLM2-135M-Instruct.Q4_1``)
        or the Hugging Face directory's name."""
        base = os.path.basename(self.config.model_path.rstrip("/"))
        return base[: -len(".gguf")] if base.endswith(".gguf") else base

    def load(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def tokenize(self, text: str, special: bool) -> list[int]:  # pragma: no cover - abstract
        """Token ids of ``text``; ``special``: whether special-token markers in it
        (``<|im_start|>``...) become their special tokens, or stay plain text."""
        raise NotImplementedError

    def render(self, messages: list[dict[str, str]]) -> str:  # pragma: no cover - abstract
        """The model's chat template applied to ``messages``, with the generation prompt."""
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        # as common.tokenization.TokenCounter counts (gateway, realtime_svc, worker): markers are text
        return len(self.tokenize(text, special=False))

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt's token ids, with user text as data (issue #14, item 8).

        Tokenizing the rendered prompt in one piece with special tokens parsed (as before) made
        ``<|im_start|>system`` inside a document a real role marker of the chat template: a
        document could open its own system turn. Here the template is rendered around
        placeholders; its own text is tokenized with special tokens, each message's content
        without them, so a marker in a document stays the plain-text tokens of its characters.
        The ids are those of the one-piece tokenization wherever the text has no markers
        (the template puts a newline or a special token at every boundary, and contents are
        stripped text; tests/security/test_prompt_injection.py holds it)."""
        marks = [CONTENT_MARK.format(i) for i in range(len(messages))]
        rendered = self.render([{**m, "content": mark} for m, mark in zip(messages, marks, strict=True)])
        ids: list[int] = []
        rest = rendered
        for m, mark in zip(messages, marks, strict=True):
            if rendered.count(mark) != 1:
                raise RuntimeError("the chat template does not render each message's content once, unchanged")
            head, rest = rest.split(mark)
            ids += self.tokenize(head, special=True)
            ids += self.tokenize(m["content"], special=False)
        ids += self.tokenize(rest, special=True)
        return ids

    def generate(self, items: Sequence[Prepared]) -> list[Result]:  # pragma: no cover - abstract
        raise NotImplementedError

    def token_bytes(self, token: int) -> bytes:  # pragma: no cover - abstract
        """The bytes a generated token stands for (token streaming: model.py decodes them into
        text deltas). Only engines with real steps (``supports_inflight``) report tokens."""
        raise NotImplementedError

    # ---------------------------------------------------------------- step API (default: static)
    def free_rows(self) -> int:
        """How many more rows ``start`` accepts now (``config.max_batch`` rows run at most)."""
        return self.config.max_batch - len(self._rows())

    def _rows(self) -> list[Row]:
        return self._step_rows

    def active_rows(self) -> int:
        return len(self._rows())

    def start(self, item: Prepared) -> Row:
        """Admit ``item`` to the running batch (an engine with real steps prefills its prompt here)."""
        rows = self._rows()
        if len(rows) >= self.config.max_batch:
            raise RuntimeError("no free row")
        row = Row(item=item, slot=len(rows))
        rows.append(row)
        return row

    def step(self) -> StepOutput:
        """Advance every running row. Default: generate all of them to the end at once."""
        rows = list(self._rows())
        if not rows:
            return StepOutput([], [])
        try:
            results = self.generate([r.item for r in rows])
        finally:
            self._rows().clear()
        for row, result in zip(rows, results, strict=True):
            row.result, row.done = result, True
        return StepOutput([], rows)

    def release(self, row: Row) -> None:
        """Drop a running row (a cancelled request) and free its slot; a finished row is already free."""
        rows = self._rows()
        if row in rows:
            rows.remove(row)

    def reset(self) -> None:
        """Drop every running row (after a failed step: their state is unknown)."""
        self._rows().clear()

    def warmup(self) -> None:
        """Generate for a batch of two (one English, one Chinese) so every code path and
        buffer is exercised before Triton reports the model ready."""
        t0 = time.perf_counter()
        items = [
            self.prepare("The quick brown fox jumps over the lazy dog. It was a sunny day.", 4, "en"),
            self.prepare("长城是中国古代的军事防御工程。", 4, "zh"),
        ]
        self.generate(items)
        self.generate(items[:1])
        self.warmup_seconds = time.perf_counter() - t0
        self._log(f"summarizer warmup generation done in {self.warmup_seconds:.1f}s")

    def prepare(self, text: str, max_tokens: int | None = None, language: str | None = None) -> Prepared:
        """Validate one item and build its prompt. Raises InvalidInput naming the limit."""
        cfg = self.config
        if text is None or not text.strip():
            raise InvalidInput("TEXT is empty (or whitespace only)")
        text = text.strip()
        if max_tokens is None:
            max_tokens = cfg.default_max_tokens
        if not 1 <= max_tokens <= cfg.max_new_tokens_cap:
            raise InvalidInput(
                f"MAX_TOKENS must be between 1 and max_new_tokens_cap={cfg.max_new_tokens_cap}, got {max_tokens}"
            )
        # Byte-level BPE: every token covers >= 1 byte, but a huge TEXT is rejected before
        # tokenizing it (a token never spans more than ~64 bytes in these vocabularies).
        if len(text.encode("utf-8")) > cfg.max_input_tokens * 64:
            raise InvalidInput(f"TEXT is too long: over max_input_tokens={cfg.max_input_tokens} tokens")
        n_tokens = self.count_tokens(text)
        if n_tokens > cfg.max_input_tokens:
            raise InvalidInput(f"TEXT has {n_tokens} tokens, over max_input_tokens={cfg.max_input_tokens}")
        lang = normalize_language(language, text)
        ids = self.prompt_ids(build_messages(text, lang))
        return Prepared(prompt_ids=list(ids), input_tokens=n_tokens, max_tokens=int(max_tokens), language=lang)

    def penalty_for(self, lang: str) -> float:
        return self.config.repetition_penalty_cjk if lang in CJK_LANGS else self.config.repetition_penalty
