"""``/problems``: the documentation of the problem types, so that a problem's ``type``
(``/problems/<type>``, common/problems.py) resolves to a page that explains it.

The page is docs/problems.md (one ``## <type>`` section per type), rendered with markdown-it-py:
``GET /problems`` is the whole page (each section's heading has the id ``<type>``, so
``/problems#<type>`` works too), ``GET /problems/<type>`` that type's section alone. HTML by
default, the Markdown source for ``Accept: text/markdown``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request, Response
from markdown_it import MarkdownIt

from common.problems import PROBLEMS_PATH, Problem

# The repository's (and the image's, docker/service.Dockerfile) docs/problems.md
PAGE = Path(__file__).resolve().parents[2] / "docs" / "problems.md"
MARKDOWN = "text/markdown; charset=utf-8"

router = APIRouter()


@dataclass(frozen=True)
class ProblemsPage:
    markdown: str
    html: str
    sections: dict[str, str]  # type -> its section's Markdown, heading included


def _markdown() -> MarkdownIt:
    # Our own file, but raw HTML off all the same: the page is served from the API's origin.
    return MarkdownIt("commonmark", {"html": False})


def _render(md: MarkdownIt, source: str) -> str:
    tokens = md.parse(source)
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and tok.tag == "h2":
            # The anchor is the heading's text, the type's name (markdown-it has no heading ids
            # of its own; GitHub's anchor for a one-word heading is the same string).
            tok.attrSet("id", tokens[i + 1].content.strip())
    return md.renderer.render(tokens, md.options, {})


@lru_cache(maxsize=1)
def problems_page(path: Path = PAGE) -> ProblemsPage:
    source = path.read_text(encoding="utf-8")
    md = _markdown()
    tokens = md.parse(source)
    # A section runs from its ``##`` heading to the next one (the parser's line map, so a ``##``
    # inside a code block is not a heading).
    starts = [
        (tokens[i + 1].content.strip(), tok.map[0])
        for i, tok in enumerate(tokens)
        if tok.type == "heading_open" and tok.tag == "h2" and tok.map
    ]
    lines = source.splitlines(keepends=True)
    sections = {
        name: "".join(lines[start : starts[n + 1][1] if n + 1 < len(starts) else len(lines)])
        for n, (name, start) in enumerate(starts)
    }
    return ProblemsPage(source, _render(md, source), sections)


def _html_page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head><body>\n{body}</body></html>\n"
    )


def _wants_markdown(request: Request) -> bool:
    return "text/markdown" in request.headers.get("accept", "").lower()


@router.get("/problems", operation_id="list_problem_types")
async def problem_types(request: Request) -> Response:
    page = problems_page()
    if _wants_markdown(request):
        return Response(page.markdown, media_type=MARKDOWN)
    return Response(_html_page("Précis problem types", page.html), media_type="text/html")


@router.get("/problems/{problem_type}", operation_id="get_problem_type")
async def problem_type(problem_type: str, request: Request) -> Response:
    section = problems_page().sections.get(problem_type)
    if section is None:
        # the name is not echoed back: it is whatever the caller put in the path
        raise Problem(404, "not-found", "Not found", "no documented problem type with this name")
    if _wants_markdown(request):
        return Response(section, media_type=MARKDOWN)
    body = _render(_markdown(), section) + f'<p><a href="{PROBLEMS_PATH}">All problem types</a></p>\n'
    return Response(_html_page(f"Précis problem type {problem_type}", body), media_type="text/html")
