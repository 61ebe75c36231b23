"""The gateway's OpenAPI document (gateway/openapi.py), in process: valid OpenAPI 3.1 with every
``$ref`` resolved, every operation documented (tags, ids, security, examples), every error a
``Problem``; and the problem types: each one the code can emit has its section in
docs/problems.md, which the gateway serves where a problem's ``type`` leads.

The live document (the stack's /openapi.json), a client generated from it and schemathesis are in
tests/e2e/test_openapi.py and tests/e2e/test_api_fuzz.py."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import jsonschema
import pytest
from fastapi import APIRouter
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from common.problems import _STATUS_TYPES, PROBLEM_JSON, type_uri
from gateway.app import create_app
from gateway.deps import TenantDep
from gateway.openapi import OPERATIONS, PROBLEM_TYPES, SECURITY_SCHEME
from gateway.routers.problems import problems_page

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "async_svc", "realtime_svc", "common")
# The HTTP layer's generic answers (common/problems.py's handler for Starlette's HTTPException):
# documented in docs/problems.md, but no operation answers them by itself.
GENERIC = {type_ for type_, _ in _STATUS_TYPES.values()} | {"http-error"}
# Answered by realtime_svc/async_svc to a call without the gateway's token, never by the public
# API: the gateway turns it into upstream-refused (tests/security/test_internal_auth.py checks it).
INTERNAL_ONLY = {"internal-unauthorized"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return create_app().openapi()


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def assert_document_complete(doc: dict[str, Any]) -> None:
    """What the live test checks too: a valid OpenAPI 3.1 whose every ``$ref`` resolves."""
    validate(doc)  # openapi-spec-validator: the structure (it does not resolve every $ref)
    resolver = Registry().with_resource("urn:doc", Resource.from_contents(doc, DRAFT202012)).resolver("urn:doc")
    found = refs(doc)
    assert found
    for ref in found:
        resolver.lookup(f"urn:doc{ref}")  # raises Unresolvable for a dangling one


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in doc["paths"].items() for method, op in item.items()]


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


def test_document_is_valid_openapi_31_without_dangling_refs(doc) -> None:
    assert doc["openapi"].startswith("3.1")
    assert_document_complete(doc)
    schemas = doc["components"]["schemas"]
    assert {"Problem", "FieldError", "SummaryRequest", "Mode", "Notify"} <= set(schemas)
    assert "HTTPValidationError" not in json.dumps(doc) and "ValidationError" not in schemas


def test_dangling_refs_are_caught() -> None:
    # the check above is the one that fails on the old document (its Mode/Notify refs dangled)
    broken = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {}, "components": {"schemas": {}}}
    broken["components"]["schemas"]["A"] = {"properties": {"m": {"$ref": "#/components/schemas/Mode"}}}
    with pytest.raises(Exception, match="Mode"):
        assert_document_complete(broken)


def test_every_operation_is_documented(doc) -> None:
    ops = operations(doc)
    assert {(m, p) for m, p, _ in ops} >= {
        ("POST", "/v1/summaries"),
        ("GET", "/v1/summaries/{job_id}"),
        ("DELETE", "/v1/summaries/{job_id}"),
        ("GET", "/problems"),
        ("GET", "/problems/{problem_type}"),
    }
    assert sorted(op["operationId"] for _, _, op in ops) == sorted(OPERATIONS)
    tags = {t["name"] for t in doc["tags"]}
    assert doc["components"]["securitySchemes"][SECURITY_SCHEME] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"][SECURITY_SCHEME]["description"],
    }
    for method, path, op in ops:
        where = f"{method} {path}"
        assert op["tags"] and set(op["tags"]) <= tags, where
        assert op["summary"] and op["description"], where
        if path.startswith("/v1/"):
            assert op["security"] == [{SECURITY_SCHEME: []}], where
            assert "401" in op["responses"] and "429" in op["responses"], where
        else:
            assert op["security"] == [], where
        # the API key is the security scheme, not a parameter
        assert all(p["name"].lower() != "authorization" for p in op.get("parameters", [])), where


def test_every_error_response_is_a_problem_with_valid_examples(doc) -> None:
    problem = validator(doc, {"$ref": "#/components/schemas/Problem"})
    n = 0
    for method, path, op in operations(doc):
        for code, resp in op["responses"].items():
            where = f"{method} {path} {code}"
            content = resp["content"]
            if code.startswith(("4", "5")):
                assert list(content) == [PROBLEM_JSON], where
                media = content[PROBLEM_JSON]
                assert media["schema"] == {"$ref": "#/components/schemas/Problem"}, where
                assert media["examples"], where
                for name, ex in media["examples"].items():
                    problem.validate(ex["value"])
                    assert ex["value"]["status"] == int(code) and ex["value"]["type"] == type_uri(name), where
                    n += 1
                    for header in PROBLEM_TYPES[name].headers:
                        assert header in resp["headers"], where
            elif "application/json" in content:
                media = content["application/json"]
                assert media.get("examples"), where
                for ex in media["examples"].values():
                    validator(doc, media["schema"]).validate(ex["value"])
    assert n >= 30
    body = doc["paths"]["/v1/summaries"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/SummaryRequest"}
    assert set(body["examples"]) == {"realtime", "stream", "async"}
    for ex in body["examples"].values():
        validator(doc, body["schema"]).validate(ex["value"])
    # the streamed answer (stream: true / Accept: text/event-stream) is a documented 200 media type,
    # its example a token event, then the summary event whose data is a RealtimeSummary
    sse = doc["paths"]["/v1/summaries"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    example = sse["examples"]["stream"]["value"]
    assert example.startswith("event: token\r\ndata: ")
    summary = example.split("event: summary\r\ndata: ")[1].strip()
    validator(doc, {"$ref": "#/components/schemas/RealtimeSummary"}).validate(json.loads(summary))


def _literal_strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):  # "model-overloaded" if ... else "model-unavailable"
        return _literal_strings(node.body) + _literal_strings(node.orelse)
    return []


def emitted_problems() -> dict[str, set[tuple[int | None, str | None]]]:
    """Every problem type the services can answer, read off the source: each ``Problem(status,
    type, title, ...)`` call and each ``super().__init__(...)`` of a ``Problem`` subclass, plus the
    HTTP layer's generic types. Type -> {(status, title)} where those are literals."""
    found: dict[str, set[tuple[int | None, str | None]]] = {t: {(None, None)} for t in GENERIC}
    for top in SERVICES:
        for path in (ROOT / top).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            calls: list[ast.Call] = []
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Problem":
                    calls.append(node)
                if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and b.id == "Problem" for b in node.bases
                ):
                    calls += [
                        c
                        for c in ast.walk(node)
                        if isinstance(c, ast.Call)
                        and isinstance(c.func, ast.Attribute)
                        and c.func.attr == "__init__"
                        and isinstance(c.func.value, ast.Call)
                        and isinstance(c.func.value.func, ast.Name)
                        and c.func.value.func.id == "super"
                    ]
            for call in calls:
                if len(call.args) < 3:
                    continue
                status = call.args[0].value if isinstance(call.args[0], ast.Constant) else None
                title = call.args[2].value if isinstance(call.args[2], ast.Constant) else None
                for type_ in _literal_strings(call.args[1]):
                    found.setdefault(type_, set()).add((status, title))
    return found


def test_the_scan_finds_the_problems_the_code_raises() -> None:
    found = emitted_problems()
    # one from each kind of raise site: a literal call, a helper, a subclass, a conditional
    assert {
        "unsupported-media-type",
        "unauthorized",
        "rate-limited",
        "upstream-unavailable",
        "not-found",
        "idempotency-key-reused",
        "job-finished",
        "model-overloaded",
        "model-unavailable",
        "text-too-long-for-realtime",
        "text-too-large",
        "validation-error",
        "internal-error",
    } <= set(found)


def test_every_problem_type_the_code_emits_has_a_section_in_docs_problems_md() -> None:
    sections = problems_page().sections
    emitted = emitted_problems()
    missing = sorted(set(emitted) - set(sections))
    assert not missing, f"docs/problems.md has no section for {missing}"
    assert set(PROBLEM_TYPES) <= set(sections)


def test_every_problem_type_an_operation_can_answer_is_in_the_openapi_table() -> None:
    emitted = emitted_problems()
    named = {t for op in OPERATIONS.values() for t in op.errors}
    missing = sorted(set(emitted) - GENERIC - INTERNAL_ONLY - named)
    assert not INTERNAL_ONLY & named, "an internal-only problem type is named by a public operation"
    assert not missing, f"gateway/openapi.py: no operation names {missing} (PROBLEM_TYPES + Operation.errors)"
    for type_, uses in emitted.items():
        if type_ not in PROBLEM_TYPES:
            continue
        doc_type = PROBLEM_TYPES[type_]
        for status, title in uses:
            assert status in (None, doc_type.status), type_
            assert title in (None, doc_type.title), type_
        # and docs/problems.md opens the section with the same status and title
        assert f"**{doc_type.status} {doc_type.title}.**" in problems_page().sections[type_], type_


async def test_problem_types_resolve_to_their_documentation() -> None:
    app = create_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test") as c:
        # a real problem's type, resolved against the URL that answered, leads to its section
        r = await c.get("/no/such/path")
        assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM_JSON)
        page = await c.get(urljoin(str(r.url), r.json()["type"]))
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<h2 id="not-found">not-found</h2>' in page.text
        assert "404 Not found." in page.text

        whole = await c.get("/problems")
        assert whole.status_code == 200 and whole.headers["content-type"].startswith("text/html")
        for name in problems_page().sections:
            assert f'<h2 id="{name}">{name}</h2>' in whole.text  # /problems#<type>
            one = await c.get(f"/problems/{name}")
            assert one.status_code == 200 and f'id="{name}"' in one.text, name

        md = await c.get("/problems/rate-limited", headers={"Accept": "text/markdown"})
        assert md.headers["content-type"].startswith("text/markdown") and md.text.startswith("## rate-limited\n")

        unknown = await c.get("/problems/<script>")
        assert unknown.status_code == 404 and unknown.headers["content-type"].startswith(PROBLEM_JSON)
        assert "<script>" not in unknown.json()["detail"]  # the name is not echoed in the detail


def test_an_operation_not_yet_in_the_table_still_gets_a_complete_document() -> None:
    # e.g. a new endpoint merged before its OPERATIONS entry: Problem errors, bearerAuth, no
    # dangling $ref (test_every_operation_is_documented is what fails until it has its entry)
    app = create_app()
    router = APIRouter()

    @router.get("/v1/things")
    async def list_things(tenant: TenantDep, limit: int = 10) -> dict[str, str]:
        return {}

    app.include_router(router)
    doc = app.openapi()
    assert_document_complete(doc)
    op = doc["paths"]["/v1/things"]["get"]
    assert op["security"] == [{SECURITY_SCHEME: []}]
    assert op["responses"]["422"]["content"][PROBLEM_JSON]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert {"401", "429"} <= set(op["responses"])


def test_create_summary_documents_the_dry_run_and_its_estimate(doc) -> None:
    op = doc["paths"]["/v1/summaries"]["post"]
    [param] = [p for p in op["parameters"] if p["name"] == "dry_run"]
    assert param["in"] == "query" and param["schema"]["type"] == "boolean" and param["schema"]["default"] is False
    media = op["responses"]["200"]["content"]["application/json"]
    # exactly one of the two bodies: each example is valid against one branch and not the other
    assert media["schema"]["oneOf"] == [
        {"$ref": "#/components/schemas/RealtimeSummary"},
        {"$ref": "#/components/schemas/Estimate"},
    ]
    branches = {b["$ref"].rsplit("/", 1)[1]: validator(doc, b) for b in media["schema"]["oneOf"]}
    expect = {"realtime": "RealtimeSummary", "estimate": "Estimate", "estimate-no-data": "Estimate"}
    assert set(media["examples"]) == set(expect)
    for name, ex in media["examples"].items():
        assert [m for m, v in branches.items() if v.is_valid(ex["value"])] == [expect[name]], name
    assert "dry_run=true" in op["description"]
