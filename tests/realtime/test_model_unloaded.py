"""A Triton that answers without its model (what a pod does between SIGTERM and exit: it unloads
the model first, then keeps the port open) gives callers 503 + Retry-After, never 502, and
realtime_svc moves to a new TCP connection, so a replacement server behind the same Service
address gets the next call. Real Triton (explicit model control: the test unloads and reloads the
model through Triton's own repository API), real realtime_svc, and a TCP forwarder between them
where the Service would be, which records each connection and what it carried."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack import PORTS, TcpProxy, TritonPorts, child_env, start_triton
from tests.realtime.conftest import AUTH, READY_TIMEOUT_S, start_realtime_svc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, TcpProxy]]:
    ports, svc, fwd = TritonPorts.allocate(), PORTS.one(), PORTS.one()
    var = tmp_path_factory.mktemp("unloaded")
    env = child_env(PRECIS_TRITON_MODEL_CONTROL="explicit")
    triton = start_triton(ports, env, Path(var) / "triton.log", READY_TIMEOUT_S)
    svc_proc = None
    try:
        with TcpProxy(fwd, ports.grpc) as proxy:
            svc_proc = start_realtime_svc(svc, fwd, Path(var) / "realtime_svc.log")
            yield f"http://127.0.0.1:{svc}", ports.http_url, proxy
    finally:
        if svc_proc is not None:
            svc_proc.stop()
        triton.stop(timeout=40)


def summarize(url: str) -> httpx.Response:
    return httpx.post(
        f"{url}/internal/summarize",
        auth=AUTH,
        timeout=120,
        json={
            "text": "The meeting was moved to Friday because the chief executive was ill.",
            "max_summary_tokens": 8,
            "request_id": uuid.uuid4().hex,
        },
    )


def test_model_gone_is_503_and_the_next_connection_is_used(stack):
    svc, triton, proxy = stack
    assert summarize(svc).status_code == 200
    assert len(proxy.conns) == 1, proxy.conns
    first = proxy.conns[0]
    r = httpx.post(f"{triton}/v2/repository/models/summarizer/unload", timeout=60)
    assert r.status_code == 200, r.text
    gone = summarize(svc)
    assert gone.status_code == 503, gone.text
    assert gone.headers["content-type"].startswith("application/problem+json")
    assert gone.json()["type"].endswith("model-unavailable") and "retry-after" in gone.headers
    metrics = httpx.get(f"{svc}/metrics").text
    # the call was sent once more on a new connection before the 503
    assert 'precis_realtime_errors_total{kind="resent"} 1.0' in metrics, metrics[-2000:]
    # ... and really on a new TCP connection (one gRPC channel replacing another reused the old
    # one's connection until each channel had its own subchannel pool), while the old one was
    # still open: behind a Service, the new connection is the one that reaches another pod
    assert len(proxy.conns) == 2, proxy.conns
    assert first.open and proxy.conns[1].upstream_bytes > 0, proxy.conns
    r = httpx.post(f"{triton}/v2/repository/models/summarizer/load", timeout=300)
    assert r.status_code == 200, r.text
    back = summarize(svc)
    assert back.status_code == 200, back.text
