"""common.triton_client._classify on what a gRPC stream reports: the model's tagged error
messages (a stream's error has no status code), Triton's own messages, and gRPC statuses."""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from common.triton_client import _classify


@pytest.mark.parametrize(
    ("message", "status", "kind", "text"),
    [
        ("[invalid] TEXT is empty (or whitespace only)", None, "invalid", "TEXT is empty (or whitespace only)"),
        ("[request id: r1] [invalid] MAX_TOKENS must be", None, "invalid", "MAX_TOKENS must be"),
        ("[internal] generation failed: boom", None, "internal", "generation failed: boom"),
        ("[unavailable] the summarizer model is unloading", None, "unavailable", "the summarizer model is unloading"),
        ("[cancelled] the request was cancelled", None, "unavailable", "the request was cancelled"),
        ("Exceeds maximum queue size", None, "overloaded", None),
        ("Request timeout expired", None, "overloaded", None),
        ("Request for unknown model: 'summarizer' is not found", None, "unavailable", None),
        ("[request id: x] unexpected inference input 'FOO' for model 'summarizer'", None, "invalid", None),
        ("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED", "deadline", None),
        ("failed to connect to all addresses", "StatusCode.UNAVAILABLE", "unavailable", None),
        ("something else", None, "internal", None),
    ],
)
def test_classify(message, status, kind, text):
    failure = _classify(InferenceServerException(msg=message, status=status))
    assert failure.kind == kind
    assert str(failure) == (text if text is not None else message)
