import json

import pytest
from pydantic import ValidationError

from common.schemas import MAX_TEXT_BYTES, SummaryRequest, text_size_problem


def test_blank_text_is_rejected():
    with pytest.raises(ValidationError, match="non-whitespace"):
        SummaryRequest(text=" \n\t ")


def test_unknown_fields_and_bad_values_are_rejected():
    with pytest.raises(ValidationError):
        SummaryRequest(text="x", colour="blue")
    with pytest.raises(ValidationError):
        SummaryRequest(text="x", max_summary_tokens=0)
    with pytest.raises(ValidationError):
        SummaryRequest(text="x", mode="batch")
    with pytest.raises(ValidationError):
        SummaryRequest(text="x", notify={"email": "not-an-email"})


def test_size_limit_is_a_413_naming_the_limit():
    assert text_size_problem("a" * MAX_TEXT_BYTES) is None
    p = text_size_problem("é" * (MAX_TEXT_BYTES // 2 + 1))
    assert p is not None and p.status == 413
    assert str(MAX_TEXT_BYTES) in p.detail


@pytest.mark.parametrize(
    "text",
    ["\u200b\u200b\u200b", "\x00\x00", "\ufeff \u200d\n", "\u2060\u00ad\t", "\x7f\x85"],
    ids=["zero-width-space", "nul", "bom-zwj", "word-joiner-soft-hyphen", "c1-controls"],
)
def test_text_of_only_invisible_characters_is_rejected(text):
    # issue #14 item 9: accepted before, and sent to the model
    with pytest.raises(ValidationError, match="visible, non-whitespace"):
        SummaryRequest(text=text)


@pytest.mark.parametrize("text", ["a", "\u200bword\u200b", "会议", "١٢٣", "🙂"])
def test_text_with_a_visible_character_is_accepted(text):
    assert SummaryRequest(text=text).text == text


@pytest.mark.parametrize("value", ["5", True, 5.0, "five"])
def test_max_summary_tokens_must_be_a_json_integer(value):
    # issue #14 item 9: "5" and true were coerced to 5 and 1
    with pytest.raises(ValidationError, match="max_summary_tokens"):
        SummaryRequest.model_validate_json(json.dumps({"text": "x", "max_summary_tokens": value}))


def test_max_summary_tokens_integer_is_accepted():
    assert SummaryRequest.model_validate_json('{"text": "x", "max_summary_tokens": 5}').max_summary_tokens == 5
