from common.chunking import chunk_text, group_for_reduce, split_sentences
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
