"""Development SMTP sink: a real SMTP server (aiosmtpd) that writes every mail it receives as an
``.eml`` file under ``$PRECIS_VAR_DIR/mail/``. Never used in production (the chart points the
notifier at a real relay).

Opt-in HTTP listing (the smtp-sink image, docker/smtp-sink.Dockerfile, turns it on so a cluster
test can count mails): with ``PRECIS_SMTP_SINK_HTTP_PORT`` set, it also serves on that port
(same host as SMTP, ``PRECIS_SMTP_SINK_HOST``)
  GET /healthz       -> 200 {"status": "ok"}
  GET /api/mails     -> 200 [{"id", "from", "to": [...], "subject", "message_id", "received_at"}]
  DELETE /api/mails  -> 200 {"deleted": n}  (removes the .eml files too)
Unset (the default, used by `make run` and the tests), nothing but SMTP runs, exactly as before.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import os
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session


class EmlWriter:
    index: MailIndex | None = None  # set when the HTTP listing is on

    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        outdir.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.eml"
        data = envelope.original_content or envelope.content
        raw = data if isinstance(data, bytes) else str(data).encode()
        tmp = self.outdir / (name + ".tmp")
        await asyncio.to_thread(tmp.write_bytes, raw)
        await asyncio.to_thread(tmp.rename, self.outdir / name)  # readers never see half a mail
        print(f"smtp-sink: mail for {','.join(envelope.rcpt_tos)} -> {name}", flush=True)
        if self.index is not None:
            self.index.add(name, raw, envelope.mail_from, list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


class MailIndex:
    """What the HTTP listing serves: one record per .eml file (envelope sender/recipients for the
    mails received by this process; for files found at start-up, their From/To headers)."""

    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        self.mails: list[dict] = []
        for path in sorted(outdir.glob("*.eml")):
            hdr = _headers(path.read_bytes())
            rcpts = [a.strip() for a in str(hdr.get("To", "")).split(",") if a.strip()]
            received = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            self.mails.append(_record(path.name, hdr, str(hdr.get("From", "")), rcpts, received))

    def add(self, name: str, raw: bytes, mail_from: str | None, rcpts: list[str]) -> None:
        self.mails.append(_record(name, _headers(raw), mail_from or "", rcpts, datetime.now(UTC)))

    def clear(self) -> int:
        n = len(self.mails)
        for mail in self.mails:
            (self.outdir / f"{mail['id']}.eml").unlink(missing_ok=True)
        self.mails = []
        return n


def _headers(raw: bytes):
    return email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(raw)


def _record(name: str, hdr, mail_from: str, rcpts: list[str], received: datetime) -> dict:
    return {
        "id": name.removesuffix(".eml"),
        "from": mail_from,
        "to": rcpts,
        "subject": str(hdr.get("Subject", "")),
        "message_id": str(hdr.get("Message-ID", "")),
        "received_at": received.isoformat().replace("+00:00", "Z"),
    }


async def serve_http(index: MailIndex, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A deliberately tiny HTTP/1.1 server (one request per connection): no extra dependency."""
    try:
        request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        method, target = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")[:2]
        path = target.split("?", 1)[0]
        if path == "/healthz" and method in ("GET", "HEAD"):
            status, body = "200 OK", {"status": "ok"}
        elif path == "/api/mails" and method == "GET":
            status, body = "200 OK", index.mails
        elif path == "/api/mails" and method == "DELETE":
            status, body = "200 OK", {"deleted": await asyncio.to_thread(index.clear)}
        elif path in ("/healthz", "/api/mails"):
            status, body = "405 Method Not Allowed", {"error": "method not allowed"}
        else:
            status, body = "404 Not Found", {"error": "not found"}
        data = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + (data if method != "HEAD" else b"")
        )
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    port = int(os.environ.get("PRECIS_SMTP_PORT", "1025"))
    host = os.environ.get("PRECIS_SMTP_SINK_HOST", "127.0.0.1")
    outdir = Path(os.environ.get("PRECIS_VAR_DIR", "var")) / "mail"
    handler = EmlWriter(outdir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="precis-dev-sink"), host, port)
    print(f"smtp-sink: listening on {host}:{port}, writing to {outdir}", flush=True)
    http_server = None
    if os.environ.get("PRECIS_SMTP_SINK_HTTP_PORT"):
        http_port = int(os.environ["PRECIS_SMTP_SINK_HTTP_PORT"])
        handler.index = MailIndex(outdir)
        http_server = await asyncio.start_server(lambda r, w: serve_http(handler.index, r, w), host, http_port)
        print(f"smtp-sink: HTTP listing on {host}:{http_port} (/healthz, /api/mails)", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()
    if http_server is not None:
        http_server.close()
        await http_server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
