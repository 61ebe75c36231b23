import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.chunking import (
    MAX_REDUCE_LEVELS,
    ReduceDidNotConverge,
    ReducePlan,
    chunk_text,
    group_for_reduce,
    join_for_reduce,
    pack_sizes,
    plan_map_reduce,
    reduce_fan_in,
    split_sentences,
)
from common.tokenization import load_tokenizer


def tok():
    return load_tokenizer()


def ntok(text: str) -> int:
    return len(tok().encode(text, add_special_tokens=False).ids)


def test_split_sentences_latin_cjk_and_paragraphs():
    parts = split_sentences('One. Two? "Three!" Four\n\nFive。六！七？八；九')
    assert [p.strip() for p in parts] == ["One.", "Two?", '"Three!"', "Four", "Five。", "六！", "七？", "八；", "九"]


def test_chunks_respect_budget_and_keep_every_character():
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(400))
    chunks = chunk_text(text, tok(), 120)
    assert len(chunks) > 5
    assert all(ntok(c) <= 120 for c in chunks)
    # Nothing dropped: the chunks re-join to the original words.
    assert " ".join(chunks).split() == text.split()
    # Boundaries fall on sentence ends.
    assert all(c.rstrip().endswith(".") for c in chunks)


def test_overlong_sentence_is_split_not_truncated():
    text = "word " * 1000  # no sentence end at all
    chunks = chunk_text(text, tok(), 100)
    assert all(ntok(c) <= 100 for c in chunks)
    assert " ".join(chunks).split() == text.split()  # only edge whitespace is trimmed


def test_chinese_text_chunks_on_cjk_punctuation():
    text = "今天天气很好。我们去公园散步！" * 200
    chunks = chunk_text(text, tok(), 64)
    assert len(chunks) > 3
    assert all(ntok(c) <= 64 for c in chunks)
    assert all(c.endswith(("。", "！")) for c in chunks)
    assert "".join(chunks) == text


def test_group_for_reduce_packs_under_budget():
    t = tok()
    summaries = [f"Summary {i} of a part of the book about a character." for i in range(50)]
    groups = group_for_reduce(
        summaries, lambda xs: [len(e.ids) for e in t.encode_batch(xs, add_special_tokens=False)], 100
    )
    assert 1 < len(groups) < 50
    assert all(ntok(g) <= 100 + 10 for g in groups)
    assert sum(g.count("Summary ") for g in groups) == 50


def test_empty_text_has_no_chunks():
    assert chunk_text("   \n\n ", tok(), 64) == []


# ---- the reduce's shape (ReducePlan: the worker's levels and calls, the dry run's estimate) ----


def test_pack_sizes_is_greedy_and_keeps_order() -> None:
    assert pack_sizes([3, 3, 3, 3, 3], 7) == [2, 2, 1]
    assert pack_sizes([10, 1, 1], 5) == [1, 2]  # an over-budget unit gets a group of its own
    assert pack_sizes([], 5) == []


def test_reduce_fan_in_counts_the_separator_and_join_matches_group_for_reduce() -> None:
    t = tok()
    summaries = [f"Summary {i} of a part of the book about a character." for i in range(30)]

    def count(xs: list[str]) -> list[int]:
        return [len(e.ids) for e in t.encode_batch(xs, add_special_tokens=False)]

    fan_in = reduce_fan_in(count(summaries), 100)
    assert sum(fan_in) == 30
    assert join_for_reduce(summaries, fan_in) == group_for_reduce(summaries, count, 100)


def test_plan_of_one_chunk_is_one_call_and_of_many_adds_the_reduce_levels() -> None:
    one = plan_map_reduce(1, 96, 768)
    assert (one.calls, one.level, one.levels) == (1, 0, [1])
    # 97-token units, 7 per 768-token window: 15 → 3 → 1
    many = plan_map_reduce(15, 96, 768)
    assert (many.levels, many.calls, many.level) == ([15, 3, 1], 15 + 3 + 1, 2)
    assert plan_map_reduce(7, 96, 768).levels == [7, 1]


def test_a_reduce_that_cannot_shrink_is_reported_not_looped() -> None:
    plan = plan_map_reduce(4, 96, 100)  # one 97-token summary per window: never fewer inputs
    assert not plan.converged and plan.level == MAX_REDUCE_LEVELS
    worker_plan = ReducePlan(4, 100)
    with pytest.raises(ReduceDidNotConverge):
        counts = [96] * 4
        while not worker_plan.final:
            counts = [96] * len(worker_plan.next_level(counts))


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.integers(1, 400),
    summary=st.integers(8, 120),
    budget=st.integers(256, 1024),
    data=st.data(),
)
def test_summaries_within_their_budget_never_make_more_calls_than_planned(chunks, summary, budget, data) -> None:
    """What the dry run promises: the estimate is the most calls a run whose summaries stay within
    ``chunk_summary_tokens`` makes (the worker feeds ReducePlan its real summaries' counts)."""
    planned = plan_map_reduce(chunks, summary, budget)
    real = ReducePlan(chunks, budget)
    n = chunks
    while not real.final:
        counts = data.draw(st.lists(st.integers(1, summary), min_size=n, max_size=n))
        n = len(real.next_level(counts))
    assert real.calls <= planned.calls and real.level <= planned.level
