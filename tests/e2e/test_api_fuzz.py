"""Property-based fuzzing of the public API (schemathesis, from the gateway's own OpenAPI).

Whatever the body, the gateway never answers 5xx for client mistakes, and every 4xx is
application/problem+json without a stack trace.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

pytestmark = pytest.mark.e2e


@pytest.fixture
def api_schema(stack):
    return schemathesis.openapi.from_url(f"{stack.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_5xx_and_4xx_are_problems(case, stack):
    if case.body is not None and isinstance(case.body, dict) and "text" in case.body:
        # Keep the real model's work small: fuzz the envelope, not the generation length.
        case.body["max_summary_tokens"] = 8
    response = case.call(headers=stack.auth(), timeout=120)
    assert response.status_code < 500 or response.status_code in (503, 504), (
        f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}"
    )
    if 400 <= response.status_code < 500:
        assert response.headers["content-type"].startswith("application/problem+json"), response.text
        assert "Traceback" not in response.text
