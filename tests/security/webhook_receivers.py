"""Real webhook receivers on loopback for the notifier's security tests: a well-behaved one that
verifies Standard Webhooks signatures (the ``standardwebhooks`` reference library), and a raw
asyncio server whose paths misbehave the ways issue #14 item 2 names (hang, trickle, huge body)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    verified_by: list[str]  # names of the secrets that verify this delivery


@dataclass
class GoodReceiver:
    port: int
    secrets: dict[str, str]  # name -> whsec_ secret to try on every delivery
    got: list[Delivery] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def at(self, path: str) -> list[Delivery]:
        return [d for d in self.got if d.path == path]


def _verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


@contextlib.asynccontextmanager
async def good_receiver(secrets: dict[str, str]) -> AsyncIterator[GoodReceiver]:
    state = GoodReceiver(0, secrets)

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        ok = [name for name, sec in state.secrets.items() if _verifies(sec, body, headers)]
        state.got.append(Delivery(request.path.lstrip("/"), headers, body, ok))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{path:.*}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield state
    finally:
        await runner.cleanup()


# The huge receiver sends this much, then keeps the response open (never finishes the body): an
# unbounded reader waits for the rest; a capped one stopped long before.
HUGE_BODY_BYTES = 64 * 1024 * 1024


@dataclass
class BadReceiver:
    port: int
    hits: dict[str, int] = field(default_factory=dict)

    def url(self, behaviour: str) -> str:
        return f"http://127.0.0.1:{self.port}/{behaviour}"


@contextlib.asynccontextmanager
async def bad_receiver() -> AsyncIterator[BadReceiver]:
    """Paths: /hang (reads the request, never answers), /trickle (one byte of the status line and
    headers every 0.2 s, forever: no per-phase timeout ever fires), /huge (200 and a chunked body
    that never ends), /error (HTTP 500, every time)."""
    state = BadReceiver(0)
    conns: set[asyncio.Task] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conns.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode().lstrip("/")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            await reader.readexactly(length)
            state.hits[path] = state.hits.get(path, 0) + 1
            if path == "hang":
                await reader.read()  # until the client gives up and closes
            elif path == "trickle":
                for b in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000_000:
                    writer.write(bytes([b]))
                    await writer.drain()
                    await asyncio.sleep(0.2)
            elif path == "huge":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                chunk = b"x" * 65536
                sent = 0
                while sent < HUGE_BODY_BYTES:
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await writer.drain()
                    sent += len(chunk)
                await reader.read()  # never end the body; wait for the client to close
            else:
                writer.write(
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops"
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up on us: what the capped reads and deadlines are for
        finally:
            writer.close()
            conns.discard(task)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for t in list(conns):
            t.cancel()
        await asyncio.gather(*conns, return_exceptions=True)


def names(deliveries: Sequence[Delivery]) -> list[list[str]]:
    return [d.verified_by for d in deliveries]
