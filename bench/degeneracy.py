"""Checks that a degenerate summary cannot pass for a good one (used by bench/eval.py).

ROUGE against a reference rewards overlap, so output that copies the source or repeats the
prompt's own instruction can outscore a real summary (character-level ROUGE on Chinese does:
SmolLM2-135M's zh output echoed the instruction and copied the document's opening, and scored
above Lead-3). Per summary this module measures:

- **prompt echo**: the longest run of tokens the summary shares with one of the instructions the
  model was given (summarizer_engine.text, the strings build_messages sends), as a share of
  that instruction's tokens;
- **copy ratio**: the longest run of tokens shared with the source, as a share of the summary's
  tokens (1.0: the whole summary is one lifted span; Lead-3 is 1.0 by construction);
- **novel n-gram share**: the share of the summary's n-grams that are not in the source;
- **length ratio**: achieved words ÷ target words.

Pure functions: no model, no I/O.

Tokens (``tokens``): one per CJK ideograph or kana, one per run of other letters/digits
(lower-cased); punctuation and spaces are dropped, so full-width and ASCII punctuation, or the
line breaks a model adds, do not hide a copy. For English this is plain words; it matches the
per-character tokens bench/eval.py scores Chinese ROUGE with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from summarizer_engine.text import (
    CJK_LANGS,
    EN_INSTRUCTION,
    LANGUAGE_NAMES,
    OTHER_LANGUAGE_SUFFIX,
    ZH_INSTRUCTION,
    ZH_SYSTEM_PROMPT,
)

# --- thresholds ---------------------------------------------------------------------------------

# Prompt echo: a contiguous run of at least half of an instruction's tokens. For the English
# instruction (9 words) that is 5 words, e.g. "in one or two sentences": shorter runs ("one or
# two") occur in genuine summaries, a 5-word run of the instruction does not. For the zh user
# instruction (22 characters) it is 11 characters, for the zh system prompt (13) 7 characters.
ECHO_MIN_FRACTION = 0.5

# Copy: the summary is one lifted span (copy ratio >= 0.8) AND it adds almost nothing
# (< 10 % novel n-grams). Both, so that only a copy by both readings is flagged: a short
# extractive summary can lift one long clause and add its own words (copy ratio 0.8, novel
# share >= 0.1), and one stitched from several source sentences has almost no novel n-grams
# but no single run covering 80 % of it; neither is flagged, both show in the means.
# 0.8, not 1.0, so that a copy with a few tokens added around it still counts.
COPY_RATIO_MAX = 0.8
NOVEL_SHARE_MIN = 0.1

# Length: achieved ÷ target words inside [0.3, 3]. Below 0.3 of the eval's 48-word target is
# under ~14 words (less than one informative sentence: an empty, cut-off or one-phrase output);
# above 3 the output is over three budgets long, which an engine capped at max_tokens cannot
# produce, so the upper bound binds only on baselines or items that carry their own target.
# Measured against the budget, not a per-item target, the floor also flags short human
# references (the eval's: 2 of 22 English, 3 of 5 title-like Chinese CSL references).
LENGTH_RATIO_RANGE = (0.3, 3.0)

# --- units --------------------------------------------------------------------------------------

# Word n-grams for English, character n-grams for CJK. Uni- and bigrams are shared even by real
# paraphrases (names, function words, "the government"); from 3 words a paraphrase's n-grams
# mostly differ from the source's while a copy's do not, and 3 is the middle of the n = 1..4
# used for "novel n-grams" in the abstractive-summarization literature. A Chinese word is about
# 1.5-2 characters, so 4 characters (about two words, a short phrase) is the comparable unit;
# 2-3 characters are often one common word that any summary of the text repeats.
NGRAM_WORDS = 3
NGRAM_CJK_CHARS = 4

# Length unit: words. CJK text has no spaces, so a CJK character counts as 1/1.5 word: the
# mean word length of segmented Mandarin running text is about 1.5-1.7 characters (function
# words are mostly one character); 1.5 keeps a Chinese summary's "words" close to what a
# word segmenter would count. Latin/digit runs count one each.
CJK_CHARS_PER_WORD = 1.5

# Target: the eval's max new tokens mapped to words, 0.75 words per token, the usual figure for
# English under a byte-level BPE like SmolLM2's (~1.3 tokens per word). The same word target is
# used for Chinese: it is what was asked of the model, whatever its tokenizer makes of Chinese.
WORDS_PER_TOKEN = 0.75

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_CJK_CHAR = re.compile(rf"[{_CJK}]")


def tokens(text: str) -> list[str]:
    """One token per CJK ideograph/kana, one per run of other letters or digits, lower-cased."""
    return [t.lower() for t in _TOKEN.findall(text or "")]


def ngram_size(lang: str) -> int:
    return NGRAM_CJK_CHARS if lang in CJK_LANGS else NGRAM_WORDS


def word_count(text: str) -> float:
    """Words, with a CJK character counting 1/CJK_CHARS_PER_WORD of a word."""
    toks = tokens(text)
    cjk = sum(1 for t in toks if _CJK_CHAR.fullmatch(t))
    return (len(toks) - cjk) + cjk / CJK_CHARS_PER_WORD


def target_words(max_tokens: int) -> float:
    return max_tokens * WORDS_PER_TOKEN


def longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common contiguous run of tokens (longest common substring).

    difflib's find_longest_match with no junk: it indexes ``b`` once and scans ``a``, at most
    O(len(a) * len(b)) and in practice far less (~2k-character texts take milliseconds).
    autojunk=False matters: by default a token that fills over 1 % of a 200+-token ``b`` (的,
    "the") cannot anchor a match, so a copied run made mostly of such tokens is under-counted.
    """
    if not a or not b:
        return 0
    sm = SequenceMatcher(None, a, b, autojunk=False)
    return sm.find_longest_match(0, len(a), 0, len(b)).size


def copy_ratio(summary: str, source: str) -> float:
    """Longest run shared with the source ÷ summary tokens; 0.0 for an empty summary."""
    s = tokens(summary)
    if not s:
        return 0.0
    return longest_common_run(s, tokens(source)) / len(s)


def _ngrams(toks: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def novel_ngram_share(summary: str, source: str, n: int) -> float | None:
    """Share of the summary's n-grams (with repeats) absent from the source; None when the
    summary has fewer than n tokens (no n-gram to judge)."""
    grams = _ngrams(tokens(summary), n)
    if not grams:
        return None
    src = set(_ngrams(tokens(source), n))
    return sum(1 for g in grams if g not in src) / len(grams)


def prompt_instructions(lang: str) -> list[str]:
    """The fixed prompt text build_messages sends for ``lang`` (system prompt and instruction)."""
    if lang == "zh":
        return [ZH_SYSTEM_PROMPT, ZH_INSTRUCTION]
    if lang == "en":
        return [EN_INSTRUCTION]
    return [EN_INSTRUCTION + OTHER_LANGUAGE_SUFFIX.format(language=LANGUAGE_NAMES.get(lang, lang))]


def echo_ratio(summary: str, lang: str) -> float:
    """Max over the prompt's instructions of (longest run shared with the summary ÷ the
    instruction's tokens): 1.0 when the summary contains a whole instruction."""
    s = tokens(summary)
    best = 0.0
    for instr in prompt_instructions(lang):
        it = tokens(instr)
        if it:
            best = max(best, longest_common_run(s, it) / len(it))
    return best


@dataclass(frozen=True)
class Assessment:
    copy_ratio: float
    novel_share: float | None
    echo_ratio: float
    length_ratio: float
    flags: tuple[str, ...] = field(default=())

    @property
    def degenerate(self) -> bool:
        return bool(self.flags)

    def as_dict(self) -> dict:
        return {
            "copy_ratio": round(self.copy_ratio, 3),
            "novel_share": None if self.novel_share is None else round(self.novel_share, 3),
            "echo_ratio": round(self.echo_ratio, 3),
            "length_ratio": round(self.length_ratio, 3),
            "flags": list(self.flags),
        }


def assess(summary: str, source: str, lang: str, target: float) -> Assessment:
    """All four measures for one summary and the flags it trips: ``echo``, ``copy``,
    ``length`` (``target`` in words, > 0)."""
    if target <= 0:
        raise ValueError(f"target words must be > 0, got {target}")
    cr = copy_ratio(summary, source)
    novel = novel_ngram_share(summary, source, ngram_size(lang))
    echo = echo_ratio(summary, lang)
    length = word_count(summary) / target
    flags = []
    if echo >= ECHO_MIN_FRACTION:
        flags.append("echo")
    # Fewer than n tokens: no novel share; a summary that short is judged on its copy ratio
    # (and fails the length check anyway).
    if cr >= COPY_RATIO_MAX and (novel is None or novel < NOVEL_SHARE_MIN):
        flags.append("copy")
    lo, hi = LENGTH_RATIO_RANGE
    if not lo <= length <= hi:
        flags.append("length")
    return Assessment(cr, novel, echo, length, tuple(flags))


def _mean(xs: Iterable[float]) -> float | None:
    xs = list(xs)
    return round(sum(xs) / len(xs), 3) if xs else None


def aggregate(rows: Sequence[Assessment]) -> dict:
    """Means of the measures and the share of items carrying each flag (0-1)."""
    n = len(rows)

    def share(flag: str | None) -> float | None:
        if not n:
            return None
        hit = sum(1 for r in rows if (r.degenerate if flag is None else flag in r.flags))
        return round(hit / n, 3)

    return {
        "n": n,
        "copy_ratio": _mean(r.copy_ratio for r in rows),
        "novel_share": _mean(r.novel_share for r in rows if r.novel_share is not None),
        "echo_ratio": _mean(r.echo_ratio for r in rows),
        "length_ratio": _mean(r.length_ratio for r in rows),
        "echo_share": share("echo"),
        "copy_share": share("copy"),
        "length_out_share": share("length"),
        "degenerate_share": share(None),
    }
