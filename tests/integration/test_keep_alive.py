"""Our HTTP servers (common.serve.run_http, as every service runs) keep an idle keep-alive connection
open longer than httpx's idle expiry (5 s), so a client reusing a connection is never answered by a
close from a server that dropped it at that same moment (httpx.ReadError; see common/serve.py)."""

from __future__ import annotations

import socket
import sys
import time

import pytest
from fastapi import FastAPI

from devstack import PORTS, Proc, child_env, port_open, wait_until

pytestmark = pytest.mark.integration

# The app the server process runs (it imports this module by name).
app = FastAPI()


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"pong": "yes"}


def _get(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    while b"pong" not in data:
        chunk = sock.recv(4096)
        if not chunk:  # closed by the server
            break
        data += chunk
    return data


def test_idle_connection_outlives_the_client_keep_alive_expiry(tmp_path):
    port = PORTS.one()
    code = f"from common.serve import run_http; run_http('tests.integration.test_keep_alive:app', {port})"
    proc = Proc("keepalive-server", [sys.executable, "-c", code], child_env(tmp_path), tmp_path / "server.log")
    try:
        wait_until(lambda: port_open(port), 30, "uvicorn", proc, interval=0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert _get(sock).startswith(b"HTTP/1.1 200")
            time.sleep(6.5)  # idle past uvicorn's default keep-alive (5 s) and httpx's expiry (5 s)
            again = _get(sock)
        assert again.startswith(b"HTTP/1.1 200"), f"the server closed the idle connection: {again!r}"
    finally:
        proc.stop()
