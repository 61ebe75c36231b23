"""The Idempotency-Keys of spilled requests (gateway/routing.py's overload spill-over), so that a
client's retry of one reaches its job, not the realtime path as well."""

from __future__ import annotations

import asyncio
import hashlib
import logging

from limits.aio.storage import Storage
from limits.errors import StorageError

from common.schemas import SpillReason

log = logging.getLogger(__name__)


# How long a spilled request's Idempotency-Key is remembered: a client retries within minutes; a
# day is far past that and costs one small key per spilled keyed request.
SPILLED_KEY_TTL_S = 86_400
_CODES = {reason: i for i, reason in enumerate(SpillReason, start=1)}
_REASONS = {i: reason for reason, i in _CODES.items()}


class SpilledKeys:
    """The (tenant, Idempotency-Key) pairs of spilled requests, so a retry goes straight to its job
    instead of to a realtime path that may have room by then (a summary as well as the job: the
    work twice). Kept in the rate limits' store (``limits``' storage: Redis shared by the replicas,
    or this process's memory), as one counter per pair whose value is the spill's reason. Best
    effort: the store unreachable, a retry may reach realtime again, which makes no second job
    either way (the job exists once, by async_svc's unique (tenant, key) row)."""

    def __init__(self, storage: Storage, timeout_s: float) -> None:
        self.storage = storage
        self.timeout_s = timeout_s

    @staticmethod
    def _key(tenant: str, idempotency_key: str) -> str:
        # hashed: the key is client text of up to 255 characters
        return "precis-spill/" + hashlib.sha256(f"{tenant}\0{idempotency_key}".encode()).hexdigest()

    async def reason(self, tenant: str, idempotency_key: str) -> SpillReason | None:
        """The reason this pair was spilled for, or None (not spilled, or unknown)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                code = await self.storage.get(self._key(tenant, idempotency_key))
        except (StorageError, OSError, TimeoutError) as exc:
            log.warning("spilled-key lookup failed (%s): the request may go realtime", type(exc).__name__)
            return None
        return _REASONS.get(int(code or 0))

    async def remember(self, tenant: str, idempotency_key: str, reason: SpillReason) -> None:
        key = self._key(tenant, idempotency_key)
        try:
            async with asyncio.timeout(self.timeout_s):
                if not await self.storage.get(key):  # set once (a counter: a second incr would sum)
                    await self.storage.incr(key, SPILLED_KEY_TTL_S, _CODES[reason])
        except (StorageError, OSError, TimeoutError) as exc:
            log.warning("spilled-key record failed (%s)", type(exc).__name__)
