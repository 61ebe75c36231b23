"""realtime_svc's streamed summaries (``stream: true``, Server-Sent Events) against the real Triton:
the same summary as unstreamed, problems before the first token, and a client that leaves."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from httpx_sse import connect_sse

from tests.realtime.conftest import AUTH, MAX_INPUT_TOKENS
from tests.realtime.test_realtime_svc import EN, ZH, body

pytestmark = pytest.mark.integration


def read_stream(c: httpx.Client, url: str, payload: dict) -> tuple[list[str], dict]:
    """The token texts and the final summary event's data of one streamed request."""
    tokens: list[str] = []
    final: dict | None = None
    with connect_sse(c, "POST", f"{url}/internal/summarize", json=payload) as source:
        assert source.response.status_code == 200, source.response.read()
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for sse in source.iter_sse():
            if sse.event == "token":
                assert final is None, "a token after the summary event"
                tokens.append(json.loads(sse.data)["text"])
            elif sse.event == "summary":
                final = json.loads(sse.data)
            else:
                raise AssertionError(f"unexpected event {sse.event}: {sse.data}")
    assert final is not None, "the stream ended without a summary event"
    return tokens, final


@pytest.mark.parametrize("text", [EN, ZH], ids=["en", "zh"])
def test_stream_yields_the_same_summary_as_unstreamed(realtime, text):
    with httpx.Client(auth=AUTH, timeout=120) as c:
        tokens, final = read_stream(c, realtime.url, body(text, 24, stream=True))
        plain = c.post(f"{realtime.url}/internal/summarize", json=body(text, 24))
    assert plain.status_code == 200, plain.text
    p = plain.json()
    assert (final["summary"], final["usage"], final["model"]) == (p["summary"], p["usage"], p["model"])
    # the tokens arrived one step at a time (a character split across two tokens comes whole,
    # with the second), and the summary is their text, cleaned
    assert 2 <= len(tokens) <= final["usage"]["output_tokens"]
    streamed = "".join(tokens)
    assert "\ufffd" not in streamed
    assert final["summary"] and final["summary"] in streamed
    t = final["timings"]
    assert 0 < t["ttft_ms"] <= t["inference_ms"]


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        ({"text": "   "}, 422, "blank"),
        ({"text": " ".join(f"word{i}" for i in range(200))}, 413, str(MAX_INPUT_TOKENS)),
        ({"text": EN, "language": "no such language!"}, 422, "LANGUAGE"),
    ],
)
def test_errors_before_the_first_token_are_problems(realtime, payload, status, needle):
    r = httpx.post(
        f"{realtime.url}/internal/summarize",
        auth=AUTH,
        json={"request_id": "x", "stream": True, **payload},
        headers={"Accept": "text/event-stream"},
        timeout=60,
    )
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert needle in r.text


def _in_flight(url: str) -> float:
    m = re.search(r"^precis_realtime_in_flight (\S+)$", httpx.get(f"{url}/metrics", timeout=10).text, re.M)
    assert m, "precis_realtime_in_flight not in metrics"
    return float(m.group(1))


def test_a_client_that_leaves_cancels_its_generation(realtime):
    """Closing the connection after the first token gives back realtime_svc's in-flight place and
    cancels the Triton request (the model logs the freed row)."""
    log = realtime.triton.log_path
    cancels_before = log.read_text(errors="replace").count("request cancelled")
    with httpx.Client(auth=AUTH, timeout=120) as c:
        with connect_sse(c, "POST", f"{realtime.url}/internal/summarize", json=body(ZH, 300, stream=True)) as source:
            first = next(source.iter_sse())
            assert first.event == "token"  # and leave at once: the generation has far to go
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        cancelled = log.read_text(errors="replace").count("request cancelled") > cancels_before
        if cancelled and _in_flight(realtime.url) == 0:
            return
        time.sleep(0.2)
    raise AssertionError(
        f"after the client left: in flight {_in_flight(realtime.url)}, "
        f"Triton log cancellations {log.read_text(errors='replace').count('request cancelled') - cancels_before}"
    )
