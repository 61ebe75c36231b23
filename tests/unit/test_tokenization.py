"""TokenCounter's byte bound: a shortcut only where it cannot change an answer."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer

from bench.eval import load_items
from common.tokenization import TokenCounter, _at_most_one_token_per_byte

TEXTS = [
    "A short sentence.",
    "   leading and trailing spaces   \n\n\t tabs",
    "数字和标点：１２３，。！？ mixed with English words and 😀 emoji 👩‍👩‍👧",
    "ẞ, Ǆ, ﬁ ligatures and combining marks: é (e + U+0301)",
    "x" * 3000,
    " ".join(["antidisestablishmentarianism"] * 50),
]


def eval_texts() -> list[str]:
    return [it["document"] for it in load_items()]


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def test_model_tokenizer_has_byte_bound(counter: TokenCounter) -> None:
    assert counter.byte_bound


def test_never_more_tokens_than_bytes(counter: TokenCounter) -> None:
    for text in TEXTS + eval_texts():
        assert counter.count(text) <= len(text.encode())


@pytest.mark.parametrize("text", TEXTS + eval_texts()[:6])
def test_over_limit_agrees_with_exact_count(counter: TokenCounter, text: str) -> None:
    n = counter.count(text)
    nbytes = len(text.encode())
    for limit in {max(1, n - 1), n, n + 1, nbytes, nbytes + 1}:
        got = counter.over_limit(text, limit)
        if n <= limit:
            assert got is None, (limit, n)
        else:
            assert got is not None and got > limit


def test_a_normalizer_disables_the_shortcut(counter: TokenCounter) -> None:
    spec = json.loads(counter.tokenizer.to_str())
    spec["normalizer"] = {"type": "NFKC"}  # could turn one byte sequence into more bytes
    assert not _at_most_one_token_per_byte(Tokenizer.from_str(json.dumps(spec)))
    spec["normalizer"] = None
    spec["pre_tokenizer"]["add_prefix_space"] = True
    assert not _at_most_one_token_per_byte(Tokenizer.from_str(json.dumps(spec)))
