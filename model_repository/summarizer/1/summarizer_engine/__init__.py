"""Summarization engine behind the Triton ``summarizer`` model (python backend).

It has no Triton import, so it can be exercised (and profiled) alone:

    python -m summarizer_engine "Some paragraph ..."

``model.py`` calls :meth:`BaseEngine.prepare` once per request row (validation, prompt, token
counting: a :class:`Prepared`) and :meth:`BaseEngine.generate` once per batch (one :class:`Result`
per row). Both engines share the prompts, the validation, greedy decoding with a per-row
repetition penalty and the output cleaning.

Modules:

* ``config``: :class:`EngineConfig` (every parameter and env var is documented there), the two
  errors model.py maps to Triton errors, the ``engine=auto`` choice;
* ``text``: language detection, prompts, cleaning of the generated text;
* ``base``: :class:`BaseEngine`, what every engine shares; :class:`Prepared`, :class:`Result`;
* ``transformers_engine``: :class:`TransformersEngine` (PyTorch);
* ``llamacpp_engine``: :class:`LlamaCppEngine` (llama.cpp in process, the default on CPU).

Why it lives next to model.py: Triton's python backend appends the model version directory
(``summarizer/1``) to the stub's ``sys.path`` before it imports ``1.model``, so model.py imports
this package by its plain name, and every copy of the model repository carries it (scripts/triton.sh
serves model_repository/ in place; both Triton images ``COPY model_repository/``; the chart mounts
only config.pbtxt over the image's copy). On the host, pyproject.toml maps it as a top-level
package, so the editable install of the project (``pip install -e .``) makes it importable for
tests and bench without ``sys.path`` edits.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import BaseEngine, Prepared, Result
from .config import (
    ENV_VARS,
    ConfigError,
    EngineConfig,
    InvalidInput,
    default_model_path,
    resolve_auto_engine,
)
from .llamacpp_engine import LlamaCppEngine
from .text import CJK_LANGS, build_messages, clean_summary, detect_language, normalize_language
from .transformers_engine import TransformersEngine

ENGINE_CLASSES: dict[str, type[BaseEngine]] = {"transformers": TransformersEngine, "llamacpp": LlamaCppEngine}


def create_engine(config: EngineConfig, log: Callable[[str], None] | None = None) -> BaseEngine:
    """The engine named by ``config.engine`` (``auto`` is resolved by ``EngineConfig``)."""
    engine = config.engine if config.engine != "auto" else resolve_auto_engine(config)
    return ENGINE_CLASSES[engine](config, log)


__all__ = [
    "CJK_LANGS",
    "ENGINE_CLASSES",
    "ENV_VARS",
    "BaseEngine",
    "ConfigError",
    "EngineConfig",
    "InvalidInput",
    "LlamaCppEngine",
    "Prepared",
    "Result",
    "TransformersEngine",
    "build_messages",
    "clean_summary",
    "create_engine",
    "default_model_path",
    "detect_language",
    "normalize_language",
    "resolve_auto_engine",
]
