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
