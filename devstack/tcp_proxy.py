"""A TCP forwarder for tests that need to see connections: it stands where a
Kubernetes Service would (one address in front of a real server) and records every accepted
connection and the bytes it carried each way. Hand-written (asyncio streams, ~40 lines): the
tests need per-connection byte counts, which no proxy library on PyPI reports."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass


@dataclass
class Conn:
    peer: str
    upstream_bytes: int = 0  # client -> server
    downstream_bytes: int = 0
    open: bool = True


class TcpProxy:
    def __init__(self, listen_port: int, target_port: int, host: str = "127.0.0.1") -> None:
        self.listen_port, self.target_port, self.host = listen_port, target_port, host
        self.conns: list[Conn] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, self.host, self.listen_port))
        self._ready.set()
        self._loop.run_forever()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: Conn, up: bool) -> None:
        try:
            while data := await reader.read(65536):
                if up:
                    conn.upstream_bytes += len(data)
                else:
                    conn.downstream_bytes += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(peer=str(writer.get_extra_info("peername")))
        self.conns.append(conn)
        try:
            ur, uw = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            conn.open = False
            return
        await asyncio.gather(self._pipe(reader, uw, conn, True), self._pipe(ur, writer, conn, False))
        conn.open = False
