"""Assertions shared by the test layers."""

from __future__ import annotations

from typing import Any

import httpx

from common.problems import PROBLEM_JSON, type_uri


def assert_problem(r: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    """``r`` is an RFC 9457 problem of this status and type, with no stack trace in it."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    doc = r.json()
    assert doc["type"] == type_uri(type_)
    assert doc["status"] == status
    assert "Traceback" not in r.text
    return doc
