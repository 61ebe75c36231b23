"""A realtime_svc pod that goes away under a request (a rollout closing a pooled keep-alive
connection) costs the caller nothing: the gateway sends the side-effect-free realtime call once
more, on a new connection. Real gateway process, real sockets: the upstream here is a TCP server
that drops the first connection after reading the request, then answers."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack import PORTS, child_env, start_service

AUTH = {"Authorization": "Bearer precis-dev-key"}
BODY = json.dumps(
    {
        "id": "x",
        "mode": "realtime",
        "summary": "ok",
        "model": "m",
        "usage": {"input_tokens": 3, "output_tokens": 1},
        "timings": {},
    }
).encode()


class DropFirst:
    """Reads each request; closes the first `drops` connections without a byte of response."""

    def __init__(self, drops: int) -> None:
        self.drops = drops
        self.seen = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int(
                    next(
                        (ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")),
                        b"0",
                    )
                )
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.seen += 1
                if self.seen <= self.drops:
                    continue  # close: no status line, nothing
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
                    + BODY
                )

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def gateway(request, tmp_path) -> Iterator[tuple[str, DropFirst]]:
    gateway_port = PORTS.one()
    upstream = DropFirst(request.param)
    env = child_env(
        tmp_path,
        PRECIS_ENV="local",
        PRECIS_REALTIME_URL=f"http://127.0.0.1:{upstream.port}",
        PRECIS_ASYNC_URL=f"http://127.0.0.1:{PORTS.one()}",
    )
    proc = None
    try:
        proc = start_service("gateway", gateway_port, env, Path(tmp_path) / "gateway.log")
        yield f"http://127.0.0.1:{gateway_port}", upstream
    finally:
        if proc is not None:
            proc.stop()
        upstream.close()


@pytest.mark.parametrize("gateway", [1], indirect=True)
def test_a_connection_dropped_before_any_response_is_retried_once(gateway):
    url, upstream = gateway
    r = httpx.post(f"{url}/v1/summaries", json={"text": "A short text.", "mode": "realtime"}, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["summary"] == "ok"
    assert upstream.seen == 2
    metrics = httpx.get(f"{url}/metrics").text
    assert "precis_gateway_upstream_retries_total 1.0" in metrics


@pytest.mark.parametrize("gateway", [2], indirect=True)
def test_only_once_then_a_clear_503(gateway):
    url, upstream = gateway
    r = httpx.post(f"{url}/v1/summaries", json={"text": "A short text.", "mode": "realtime"}, headers=AUTH, timeout=30)
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert upstream.seen == 2
