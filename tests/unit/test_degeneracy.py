"""bench/degeneracy.py: a copy, a prompt echo or a wrong-length output is flagged; a real
paraphrase is not (pure logic, no model)."""

import pytest

from bench import degeneracy as dg
from summarizer_engine.text import EN_INSTRUCTION, ZH_INSTRUCTION, ZH_SYSTEM_PROMPT, build_messages

TARGET = dg.target_words(64)  # the eval's default budget: 48 words

EN_SOURCE = (
    "The county council voted on Tuesday to close three rural libraries at the end of the year, "
    "saying the buildings cost too much to heat and repair. Campaigners who collected more than "
    "four thousand signatures said the decision would leave elderly residents without access to "
    "computers and books. The council said a mobile library van would visit each village twice a "
    "month and that the savings, about 300,000 pounds a year, would go to social care."
)
EN_PARAPHRASE = (
    "Councillors have agreed to shut three village libraries to save money, replacing them with "
    "a fortnightly mobile service despite a petition from residents who fear older people will "
    "lose out."
)

ZH_SOURCE = (
    "目的:探讨城市绿地对居民心理健康的影响.方法:对北京市五个城区的1200名居民进行问卷调查,"
    "并结合遥感影像计算住所周边500米范围内的绿地覆盖率.结果:绿地覆盖率较高地区居民的焦虑和抑郁得分"
    "明显较低,且这种关联在老年人群中更为显著.结论:增加社区绿地有助于改善居民心理健康,"
    "城市规划应重视绿地的均衡布局."
)
ZH_PARAPHRASE = (
    "基于北京问卷与卫星数据的研究显示，住处附近绿化越多，人们越少出现焦虑抑郁，老人尤其受益，"
    "因此建议规划时让各社区都能享有公园和树木。"
)


def test_prompt_instructions_are_what_build_messages_sends():
    zh = " ".join(m["content"] for m in build_messages("正文", "zh"))
    en = build_messages("Body.", "en")[0]["content"]
    fr = build_messages("Corps.", "fr")[0]["content"]
    assert all(i in zh for i in dg.prompt_instructions("zh"))
    assert dg.prompt_instructions("zh") == [ZH_SYSTEM_PROMPT, ZH_INSTRUCTION]
    assert dg.prompt_instructions("en") == [EN_INSTRUCTION] and EN_INSTRUCTION in en
    (fr_instr,) = dg.prompt_instructions("fr")
    assert fr.endswith(fr_instr) and "French" in fr_instr


def test_tokens_words_and_cjk_characters():
    assert dg.tokens("The KOH-activated 活性炭, 500米!") == ["the", "koh", "activated", "活", "性", "炭", "500", "米"]
    assert dg.tokens("") == [] and dg.tokens("，。!? ") == []
    assert dg.word_count("one two three") == 3
    assert dg.word_count("北京天气") == pytest.approx(4 / 1.5)
    assert dg.word_count("KOH活化法") == pytest.approx(1 + 3 / 1.5)


@pytest.mark.parametrize(
    "summary,source,lang",
    [
        # Lead-2 of the English source.
        (EN_SOURCE.split(". ")[0] + ". " + EN_SOURCE.split(". ")[1] + ".", EN_SOURCE, "en"),
        # The Chinese opening, with full-width punctuation where the source has ASCII and a line
        # break added: the tokens ignore both.
        (ZH_SOURCE[:90].replace(",", "，").replace(".", "。\n"), ZH_SOURCE, "zh"),
    ],
)
def test_a_copy_of_the_source_is_flagged(summary, source, lang):
    a = dg.assess(summary, source, lang, TARGET)
    assert a.copy_ratio == 1.0
    assert a.novel_share == 0.0
    assert "copy" in a.flags and a.degenerate
    assert "echo" not in a.flags


def test_a_copy_with_a_few_words_appended_is_still_a_copy():
    copied = " ".join(EN_SOURCE.split()[:40])
    a = dg.assess(copied + " officials said today", EN_SOURCE, "en", TARGET)
    assert 0.8 <= a.copy_ratio < 1.0
    assert a.novel_share is not None and 0 < a.novel_share < 0.1
    assert a.flags == ("copy",)


def test_a_lifted_clause_with_its_own_words_is_not_a_copy():
    # 16 source words then 4 of its own: copy ratio 0.8, but 4 of 18 trigrams are new.
    summary = " ".join(EN_SOURCE.split()[:16]) + " closures anger village residents"
    a = dg.assess(summary, EN_SOURCE, "en", TARGET)
    assert a.copy_ratio == pytest.approx(0.8)
    assert a.novel_share == pytest.approx(4 / 18)
    assert a.flags == ()


def test_stitched_fragments_are_not_one_copy():
    # Two separate source sentences in reverse order: low novel share, but no single run
    # covers 80 % of the summary, so the copy flag (a conjunction) stays off.
    sents = EN_SOURCE.split(". ")
    summary = sents[2] + " " + sents[0] + "."
    a = dg.assess(summary, EN_SOURCE, "en", TARGET)
    assert a.copy_ratio < dg.COPY_RATIO_MAX
    assert a.novel_share is not None and a.novel_share < dg.NOVEL_SHARE_MIN
    assert "copy" not in a.flags


def test_zh_prompt_echo_is_flagged():
    # What SmolLM2-135M wrote for zh-csl-ts-006: most of the instruction, then the source.
    echo = "以下是中文简要概括下面这段文字的要点，只输出摘要：\n\n" + ZH_SOURCE[:20]
    a = dg.assess(echo, ZH_SOURCE, "zh", TARGET)
    assert a.echo_ratio >= 20 / len(dg.tokens(ZH_INSTRUCTION))
    assert "echo" in a.flags
    # The system prompt, re-worded after its first 13 characters (zh-csl-ts-001), plus new text.
    sys_echo = "你是一个专业的中文摘要助手，可以用下面这段文字的要点输出摘要：城市绿化让人更快乐"
    assert "echo" in dg.assess(sys_echo, ZH_SOURCE, "zh", TARGET).flags
    # The exact instruction string alone.
    assert dg.echo_ratio(ZH_INSTRUCTION, "zh") == 1.0


def test_en_prompt_echo_is_flagged_but_a_common_phrase_is_not():
    echo = EN_INSTRUCTION + " " + EN_PARAPHRASE
    a = dg.assess(echo, EN_SOURCE, "en", TARGET)
    assert a.echo_ratio == 1.0 and a.flags == ("echo",)
    partial = "In one or two sentences: " + EN_PARAPHRASE
    assert "echo" in dg.assess(partial, EN_SOURCE, "en", TARGET).flags
    # "one or two" (3 of the instruction's 9 words) is ordinary English.
    ordinary = EN_PARAPHRASE + " One or two branches may stay open."
    b = dg.assess(ordinary, EN_SOURCE, "en", TARGET)
    assert b.echo_ratio == pytest.approx(3 / 9)
    assert "echo" not in b.flags


@pytest.mark.parametrize("summary,source,lang", [(EN_PARAPHRASE, EN_SOURCE, "en"), (ZH_PARAPHRASE, ZH_SOURCE, "zh")])
def test_a_genuine_paraphrase_is_not_flagged(summary, source, lang):
    a = dg.assess(summary, source, lang, TARGET)
    assert a.flags == ()
    assert not a.degenerate
    assert a.copy_ratio < 0.3
    assert a.novel_share is not None and a.novel_share > 0.8
    assert a.echo_ratio < dg.ECHO_MIN_FRACTION
    assert 0.3 <= a.length_ratio <= 3


def test_cjk_uses_character_ngrams_and_english_word_ngrams():
    assert dg.ngram_size("zh") == 4 and dg.ngram_size("ja") == 4 and dg.ngram_size("en") == 3
    # 4-character n-grams: a summary sharing only 3-character runs with the source is all novel.
    assert dg.novel_ngram_share("绿地覆率居民心健康", "绿地覆盖率与居民心理健康", 4) == 1.0
    assert dg.novel_ngram_share("绿地覆盖率", "绿地覆盖率与居民心理健康", 4) == 0.0


def test_empty_summary():
    for empty in ("", "  \n", "。，!"):
        a = dg.assess(empty, EN_SOURCE, "en", TARGET)
        assert a.copy_ratio == 0.0
        assert a.novel_share is None
        assert a.echo_ratio == 0.0
        assert a.length_ratio == 0.0
        assert a.flags == ("length",)


def test_short_source_and_short_summary():
    # Source shorter than one n-gram: every summary n-gram is novel; no crash.
    a = dg.assess(EN_PARAPHRASE, "Libraries close.", "en", TARGET)
    assert a.novel_share == 1.0 and a.copy_ratio < 0.1 and a.flags == ()
    # Summary shorter than one n-gram, copied: judged on its copy ratio (and its length).
    b = dg.assess("Libraries close", "Libraries close.", "en", TARGET)
    assert b.novel_share is None and b.copy_ratio == 1.0
    assert set(b.flags) == {"copy", "length"}
    c = dg.assess("城市绿地", "城市绿地", "zh", TARGET)
    assert c.novel_share == 0.0 and "copy" in c.flags


def test_length_against_target():
    long = " ".join(["word"] * 150)  # 150 words / 48 > 3
    assert "length" in dg.assess(long, EN_SOURCE, "en", TARGET).flags
    assert dg.assess(long, EN_SOURCE, "en", 60).flags == ()  # 2.5x a 60-word target: inside
    # 30 CJK characters = 20 words; inside against 48 words, short against a 100-word target.
    zh30 = ZH_PARAPHRASE[:32]
    assert len(dg.tokens(zh30)) == 30
    assert dg.assess(zh30, ZH_SOURCE, "zh", TARGET).length_ratio == pytest.approx(20 / 48)
    assert "length" in dg.assess(zh30, ZH_SOURCE, "zh", 100).flags
    with pytest.raises(ValueError):
        dg.assess("x", "y", "en", 0)


def test_longest_common_run_is_not_fooled_by_frequent_tokens():
    # With difflib's default autojunk, "p" (over 1 % of a 200+-token source) cannot anchor a
    # match and the 7-token run is missed in favour of the 2-token one.
    source = ["k1", "k2", "y"] + ["p"] * 6 + ["z"] + ["p"] * 300
    summary = ["k1", "k2", "q"] + ["p"] * 6 + ["z"]
    assert dg.longest_common_run(summary, source) == 7
    assert dg.longest_common_run([], source) == 0 and dg.longest_common_run(summary, []) == 0


def test_aggregate():
    rows = [
        dg.Assessment(1.0, 0.0, 0.1, 1.0, ("copy",)),
        dg.Assessment(0.2, None, 1.0, 0.1, ("echo", "length")),
        dg.Assessment(0.3, 0.9, 0.0, 0.5, ()),
        dg.Assessment(0.1, 0.6, 0.0, 0.7, ()),
    ]
    g = dg.aggregate(rows)
    assert g["n"] == 4
    assert g["copy_ratio"] == pytest.approx(0.4)
    assert g["novel_share"] == pytest.approx(0.5)  # mean of the three defined
    assert g["echo_share"] == 0.25 and g["copy_share"] == 0.25 and g["length_out_share"] == 0.25
    assert g["degenerate_share"] == 0.5
    assert dg.aggregate([])["degenerate_share"] is None
