"""Property-based fuzzing of the public API (schemathesis strategies from the gateway's own
OpenAPI document, driven by hypothesis), over every operation, with valid (positive) and invalid
(negative) requests.

Every answer must conform to the document: no 5xx; only documented status codes, content types
and headers; bodies that match their schema (a 4xx/5xx is the ``Problem`` schema, as
application/problem+json); invalid data rejected with a 4xx; authentication enforced where the
document says it is (schemathesis resends such a request without, and with a wrong, API key).
"""

from __future__ import annotations

import copy
import uuid
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.e2e

# positive_data_acceptance is not among them: the schema cannot say everything the API refuses
# with a 4xx for a schema-valid body (a text of only zero-width characters, `notify` on a short
# text that goes realtime, a webhook URL to a private address, a text over the realtime limit).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]
EXAMPLES = 25  # per operation and generation mode


def keep_local(body: object) -> None:
    """For a valid body: fuzz the envelope, not the generation length (keep the real model's work
    small), and send no webhook: the notifier would resolve and call whatever host the fuzzer
    made up (tests reach this machine only; a DNS query would already leave it)."""
    if not isinstance(body, dict):
        return
    if isinstance(body.get("text"), str):
        body["max_summary_tokens"] = 8
    notify = body.get("notify")
    if isinstance(notify, dict):
        notify.pop("webhook_url", None)


def no_outside_webhook(body: object) -> None:
    """For an invalid body: a generated webhook URL becomes one the submit-time check refuses
    without DNS (a loopback literal), so the body stays invalid and, should the mutation that made
    it invalid be one the API accepts, the job still names no outside host. A fuzz run once left
    jobs whose notifier looked up made-up names."""
    notify = body.get("notify") if isinstance(body, dict) else None
    if isinstance(notify, dict) and isinstance(notify.get("webhook_url"), str):
        notify["webhook_url"] = "https://127.0.0.1/fuzz"


def test_every_operation_conforms_to_the_document(stack):
    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    labels = {(op.method.upper(), op.path) for op in operations}
    assert labels >= {
        ("POST", "/v1/summaries"),
        ("GET", "/v1/summaries/{job_id}"),
        ("DELETE", "/v1/summaries/{job_id}"),
        ("GET", "/problems"),
        ("GET", "/problems/{problem_type}"),
    }
    seen: Counter[tuple[str, str, int]] = Counter()
    auth = stack.auth()

    def fuzz(op, mode: GenerationMode) -> None:
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=mode))
        def check(case) -> None:
            if mode is GenerationMode.POSITIVE:
                keep_local(case.body)
            else:
                no_outside_webhook(case.body)
            response = case.call(headers=auth, timeout=120)
            seen[(f"{case.method} {case.operation.path}", mode.value, response.status_code)] += 1
            case.validate_response(
                response, checks=CHECKS, headers=auth, transport_kwargs={"headers": auth, "timeout": 120}
            )
            assert "Traceback" not in response.text

        try:
            check()
        except Unsatisfiable:
            # nothing to make invalid: no parameter or body, or only unconstrained strings (the
            # /problems pages: any name is a valid request, answered 200 or 404)
            assert mode is GenerationMode.NEGATIVE and not len(op.body), op.label
            no_invalid.append(op.label)

    no_invalid: list[str] = []
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(op, mode)

    # The document's own request examples, as they are (twice with one Idempotency-Key: the
    # replayed 202 and its headers conform too)
    post = next(op for op in operations if op.label == "POST /v1/summaries")
    examples = post.definition.raw["requestBody"]["content"]["application/json"]["examples"]
    key = f"fuzz-{uuid.uuid4()}"
    for name, example in examples.items():
        body = copy.deepcopy(example["value"])
        keep_local(body)
        for _ in (1, 2):
            case = post.Case(body=body, headers={"Idempotency-Key": key + name}, media_type="application/json")
            response = case.call(headers=auth, timeout=120)
            seen[(f"POST /v1/summaries example {name}", "example", response.status_code)] += 1
            case.validate_response(
                response, checks=CHECKS, headers=auth, transport_kwargs={"headers": auth, "timeout": 120}
            )
            assert response.status_code == (202 if name == "async" else 200), response.text
    print(f"\n{len(operations)} operations, {sum(seen.values())} requests; no invalid request possible: {no_invalid}")
    for (label, mode, status), n in sorted(seen.items()):
        print(f"  {label:34} {mode:8} {status}: {n}")
    statuses = {status for _, _, status in seen}
    assert {200, 202, 401, 404, 422} <= statuses  # the valid, invalid and unauthenticated paths all ran
