"""What every engine shares: the prepared item, the result, and :class:`BaseEngine`
(validation, language, prompt, warmup)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .config import EngineConfig, InvalidInput
from .text import CJK_LANGS, build_messages, normalize_language

LOG = logging.getLogger("precis.summarizer")


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


class BaseEngine:
    """What every engine shares: validation, language, prompt, warmup. Subclasses provide
    ``load``, ``count_tokens``, ``prompt_ids`` and ``generate``."""

    name = "base"

    def __init__(self, config: EngineConfig, log: Callable[[str], None] | None = None):
        self.config = config
        self._log = log or LOG.info
        self.device = "cpu"
        self.dtype = "float32"
        self.stop_ids: list[int] = []
        self.load_seconds = 0.0
        self.warmup_seconds = 0.0

    @property
    def model_id(self) -> str:
        """The served model's name, returned with every summary (the realtime ``model`` field):
        the GGUF file's stem (it names the quantization shipped, e.g. ``SmolLM2-135M-Instruct.Q4_1``)
        or the Hugging Face directory's name."""
        base = os.path.basename(self.config.model_path.rstrip("/"))
        return base[: -len(".gguf")] if base.endswith(".gguf") else base

    def load(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def generate(self, items: Sequence[Prepared]) -> list[Result]:  # pragma: no cover - abstract
        raise NotImplementedError

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
