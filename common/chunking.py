"""Token-aware, sentence-aware chunking for map-reduce summarization.

Sentences end at Latin ``.!?`` followed by space/quote, at CJK ``。！？；…`` (no space needed),
and at blank lines. Sentences are packed greedily up to a token budget measured with the model's
tokenizer; a single sentence longer than the budget is split at token boundaries (never dropped,
never truncated).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from tokenizers import Tokenizer

# A sentence ends after terminal punctuation (plus closing quotes/brackets) followed by whitespace,
# or right after CJK terminal punctuation, or at a paragraph break.
_SENTENCE_END = re.compile(
    r"""(?<=[.!?])["'”’)\]]*\s+"""  # Latin: ". " / "?\" " ...
    r"""|(?<=[。！？；…])[」』”’）】]*"""  # CJK: no whitespace needed
    r"""|\n\s*\n"""  # paragraph break
)


def split_sentences(text: str) -> list[str]:
    parts: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        if end <= start:
            continue
        piece = text[start:end]
        if piece.strip():
            parts.append(piece)
        start = end
    tail = text[start:]
    if tail.strip():
        parts.append(tail)
    return parts


def _split_long(tokenizer: Tokenizer, sentence: str, budget: int) -> list[str]:
    enc = tokenizer.encode(sentence, add_special_tokens=False)
    offsets = enc.offsets
    pieces = []
    for i in range(0, len(offsets), budget):
        window = offsets[i : i + budget]
        a = window[0][0] if i > 0 else 0
        b = offsets[i + budget][0] if i + budget < len(offsets) else len(sentence)
        pieces.append(sentence[a:b])
    return [p for p in pieces if p]


def chunk_text(text: str, tokenizer: Tokenizer, budget: int) -> list[str]:
    """Split ``text`` into chunks of at most ``budget`` tokens, on sentence boundaries if possible."""
    if budget < 8:
        raise ValueError("chunk budget must be at least 8 tokens")
    sentences = split_sentences(text)
    if not sentences:
        return []
    counts = [len(e.ids) for e in tokenizer.encode_batch(sentences, add_special_tokens=False)]
    units: list[tuple[str, int]] = []
    for s, n in zip(sentences, counts, strict=True):
        if n > budget:
            for piece in _split_long(tokenizer, s, budget):
                units.append((piece, len(tokenizer.encode(piece, add_special_tokens=False).ids)))
        else:
            units.append((s, n))
    return pack(units, budget)


def pack(units: Sequence[tuple[str, int]], budget: int, joiner: str = "") -> list[str]:
    """Greedy packing of (text, tokens) units into groups of at most ``budget`` tokens."""
    chunks: list[str] = []
    cur: list[str] = []
    cur_n = 0
    for s, n in units:
        if cur and cur_n + n > budget:
            chunks.append(joiner.join(cur).strip())
            cur, cur_n = [], 0
        cur.append(s)
        cur_n += n
    if cur:
        chunks.append(joiner.join(cur).strip())
    return [c for c in chunks if c]


def group_for_reduce(summaries: list[str], count: Callable[[list[str]], list[int]], budget: int) -> list[str]:
    """Join chunk summaries into reduce inputs that each fit ``budget`` tokens."""
    counts = count(summaries)
    return pack([(s.strip() + "\n\n", n + 1) for s, n in zip(summaries, counts, strict=True)], budget)
