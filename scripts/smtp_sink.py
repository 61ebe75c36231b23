"""Development SMTP sink: a real SMTP server (aiosmtpd) that writes every mail it receives as an
``.eml`` file under ``$PRECIS_VAR_DIR/mail/``. Never used in production (the chart points the
notifier at a real relay)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session


class EmlWriter:
    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        outdir.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.eml"
        data = envelope.original_content or envelope.content
        raw = data if isinstance(data, bytes) else str(data).encode()
        tmp = self.outdir / (name + ".tmp")
        await asyncio.to_thread(tmp.write_bytes, raw)
        await asyncio.to_thread(tmp.rename, self.outdir / name)  # readers never see half a mail
        print(f"smtp-sink: mail for {','.join(envelope.rcpt_tos)} -> {name}", flush=True)
        return "250 Message accepted for delivery"


async def main() -> None:
    port = int(os.environ.get("PRECIS_SMTP_PORT", "1025"))
    host = os.environ.get("PRECIS_SMTP_SINK_HOST", "127.0.0.1")
    outdir = Path(os.environ.get("PRECIS_VAR_DIR", "var")) / "mail"
    handler = EmlWriter(outdir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="precis-dev-sink"), host, port)
    print(f"smtp-sink: listening on {host}:{port}, writing to {outdir}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
