"""Small asyncio helpers shared by the consumers."""

from __future__ import annotations

import asyncio
from typing import Any


async def gather_or_cancel(tasks: list[asyncio.Task]) -> list[Any]:
    """Await every task; if one fails (or the caller is cancelled), cancel the others and wait
    for them before re-raising, so no task outlives the operation that started it."""
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
