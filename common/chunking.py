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


def pack_sizes(counts: Sequence[int], budget: int) -> list[int]:
    """Greedy packing of units of ``counts`` tokens, in order, into groups of at most ``budget``
    tokens (a unit over the budget gets a group of its own): how many units each group takes.

    Pure (counts in, sizes out), so the worker's grouping of real texts and the dry-run estimate
    (:func:`plan_map_reduce`, with assumed counts) are the same computation."""
    sizes: list[int] = []
    cur = cur_n = 0
    for n in counts:
        if cur and cur_n + n > budget:
            sizes.append(cur)
            cur = cur_n = 0
        cur += 1
        cur_n += n
    if cur:
        sizes.append(cur)
    return sizes


def _join(texts: Sequence[str], sizes: Sequence[int], joiner: str = "") -> list[str]:
    out, i = [], 0
    for k in sizes:
        out.append(joiner.join(texts[i : i + k]).strip())
        i += k
    return out


def pack(units: Sequence[tuple[str, int]], budget: int, joiner: str = "") -> list[str]:
    """Greedy packing of (text, tokens) units into groups of at most ``budget`` tokens."""
    sizes = pack_sizes([n for _, n in units], budget)
    return [c for c in _join([s for s, _ in units], sizes, joiner) if c]


# ---- the reduce's shape --------------------------------------------------------------------

# Each summary enters a reduce input followed by a blank line ("\n\n"), counted as one token.
REDUCE_SEPARATOR_TOKENS = 1
# Reduce levels a job may take; past this the summaries are not shrinking and the job fails.
MAX_REDUCE_LEVELS = 12


class ReduceDidNotConverge(RuntimeError):
    def __init__(self) -> None:
        super().__init__("reduce did not converge (summaries are not shrinking)")


def reduce_fan_in(counts: Sequence[int], budget: int) -> list[int]:
    """How many consecutive summaries (of ``counts`` tokens each) go into each reduce input of at
    most ``budget`` tokens."""
    return pack_sizes([n + REDUCE_SEPARATOR_TOKENS for n in counts], budget)


def join_for_reduce(summaries: Sequence[str], fan_in: Sequence[int]) -> list[str]:
    """The reduce inputs: each group of ``fan_in`` consecutive summaries, a blank line after each."""
    return _join([s.strip() + "\n\n" for s in summaries], fan_in)


def group_for_reduce(summaries: list[str], count: Callable[[list[str]], list[int]], budget: int) -> list[str]:
    """Join chunk summaries into reduce inputs that each fit ``budget`` tokens."""
    return join_for_reduce(summaries, reduce_fan_in(count(summaries), budget))


class ReducePlan:
    """The map-reduce's levels and its planned model calls (a job's ``chunks_total``), one owner
    for both the worker (worker/mapreduce.py, fed the token counts of each level's real
    summaries) and the dry-run estimate (:func:`plan_map_reduce`, fed the summary budget).

    Level 0 maps every chunk; a single chunk is summarized once, with the final budget. More
    chunks plan one final reduce call from the start; each reduce level that still leaves more
    than one input adds its calls (:meth:`next_level`)."""

    def __init__(self, chunks: int, budget: int) -> None:
        if chunks < 1:
            raise ValueError("a map-reduce needs at least one chunk")
        self.budget = budget
        self.level = 0
        self.levels = [chunks]  # calls per level
        self.calls = chunks + (1 if chunks > 1 else 0)
        self.final = chunks == 1  # the current level gives the final summary
        self.converged = True

    def next_level(self, counts: Sequence[int]) -> list[int]:
        """The fan-in of the next level from the token counts of this level's summaries (see
        :func:`reduce_fan_in`); ``final`` says whether that level is the last."""
        if self.final:
            raise ValueError("the final level has no next level")
        if self.level + 1 > MAX_REDUCE_LEVELS:
            raise ReduceDidNotConverge()
        sizes = reduce_fan_in(counts, self.budget)
        self.level += 1
        self.levels.append(len(sizes))
        if len(sizes) == 1:
            self.final = True  # its call was planned from the start
        else:
            self.calls += len(sizes)  # another reduce level before the final one
        return sizes


def plan_map_reduce(chunks: int, summary_tokens: int, budget: int) -> ReducePlan:
    """The plan of a job of ``chunks`` chunks when every intermediate summary is
    ``summary_tokens`` long (the most the worker asks the model for). Greedy packing of units no
    larger than that fills every closed group with at least as many units, so a run whose
    summaries stay within their budget makes at most ``calls`` model calls (exactly these when
    they use all of it). Summaries that long not shrinking below ``MAX_REDUCE_LEVELS`` (the worker
    would fail such a job): the plan so far, ``converged`` False."""
    plan = ReducePlan(chunks, budget)
    n = chunks
    try:
        while not plan.final:
            n = len(plan.next_level([summary_tokens] * n))
    except ReduceDidNotConverge:
        plan.converged = False
    return plan
