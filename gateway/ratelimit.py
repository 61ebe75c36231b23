"""The gateway's rate limits, counted in a store every replica shares (the `limits` library).

Three limits, each a one-minute sliding window counter (``SlidingWindowCounterRateLimiter``):

=============  ====================  ===========================  ===================================
limit          key                   cost of one request           setting
=============  ====================  ===========================  ===================================
requests       the tenant            1                             PRECIS_RATE_LIMIT_PER_MINUTE
bytes          the tenant            the request body's size       PRECIS_RATE_LIMIT_BYTES_PER_MINUTE
failed-auth    the client address    1 per failed authentication   PRECIS_RATE_LIMIT_FAILED_AUTH_PER_MINUTE
=============  ====================  ===========================  ===================================

The sliding window *counter* (two counters per key, one INCRBY per hit) rather than the moving
window: the moving window stores one list entry per unit of cost, so a 10 MB body would push ten
million entries.

The store is ``PRECIS_RATE_LIMIT_STORAGE_URI``: ``redis://`` / ``rediss://`` (shared: the limit is
global, however many gateway replicas the HPA runs) or ``memory://`` (this process only: the
limit is per replica; the default, for `make run`'s single gateway and the in-process tests).

When the shared store cannot be reached, ``PRECIS_RATE_LIMIT_STORE_FAILURE`` decides: ``open``
(default) counts in this replica's memory until the store answers again (limits still hold, per
replica, so a Redis outage neither stops the API nor lifts every limit); ``closed`` answers 503.
/readyz reports which (gateway/routers/health.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Literal

from fastapi import Request
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.problems import Problem
from gateway.config import GatewaySettings

log = logging.getLogger(__name__)

WINDOW_S = 60
QuotaName = Literal["requests", "bytes", "failed-auth"]
_UNITS = {"requests": "requests", "bytes": "bytes", "failed-auth": "failed authentications"}
# scope["state"] key under which a request's verdicts travel to RateLimitHeaders
_STATE_KEY = "precis_rate_limits"
_MAX_ADDRESS_CHARS = 64  # a forwarded header is client text: bound what becomes a store key


def async_storage_uri(uri: str) -> str:
    """``limits``' async scheme for a configured URI: ``redis://h:p`` -> ``async+redis://h:p``."""
    return uri if uri.startswith("async+") else f"async+{uri}"


def storage_kind(uri: str) -> str:
    """``redis`` or ``memory`` (what /readyz names; never the URI, which may hold a password)."""
    return "memory" if uri.removeprefix("async+").startswith("memory") else "redis"


@dataclass(frozen=True)
class Quota:
    name: QuotaName
    item: RateLimitItem

    @property
    def limit(self) -> int:
        return self.item.amount

    def policy(self) -> str:
        """This quota as one item of the IETF draft's ``RateLimit-Policy`` list."""
        return f'{self.limit};w={WINDOW_S};name="{self.name}"'


@dataclass(frozen=True)
class Verdict:
    """One limit's state after a hit: allowed or not, what is left, seconds until quota frees."""

    quota: Quota
    allowed: bool
    remaining: int
    reset_s: int

    @property
    def share_left(self) -> float:
        return self.remaining / self.quota.limit


class RateLimits:
    def __init__(self, settings: GatewaySettings) -> None:
        uri = settings.rate_limit_storage_uri.get_secret_value()
        self.kind = storage_kind(uri)
        self.timeout_s = settings.rate_limit_store_timeout_s
        self.on_failure = settings.rate_limit_store_failure
        self.trusted_header = settings.trusted_client_ip_header
        options: dict[str, float | str | bool] = {}
        if self.kind == "redis":  # coredis: bounded waits, so a dead store cannot hold requests
            options = {"connect_timeout": self.timeout_s, "stream_timeout": self.timeout_s}
        self.storage: Storage = storage_from_string(async_storage_uri(uri), wrap_exceptions=True, **options)  # type: ignore[assignment]
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)
        # Where counting goes while the shared store is unreachable and on_failure is "open".
        self.fallback = SlidingWindowCounterRateLimiter(storage_from_string("async+memory://"))
        self.store_ok = True
        self.requests = Quota(
            "requests", RateLimitItemPerMinute(settings.rate_limit_per_minute, namespace="precis-req")
        )
        self.bytes = Quota(
            "bytes", RateLimitItemPerMinute(settings.rate_limit_bytes_per_minute, namespace="precis-bytes")
        )
        self.failed_auth = Quota(
            "failed-auth", RateLimitItemPerMinute(settings.rate_limit_failed_auth_per_minute, namespace="precis-auth")
        )
        self.tenant_policy = f"{self.requests.policy()}, {self.bytes.policy()}"

    # ---- the store ---------------------------------------------------------------------------

    async def _run(self, op: str, quota: Quota, key: str, cost: int) -> tuple[bool, int, float]:
        """``op`` (hit or test) and the window's stats, in the shared store, or in memory when it
        is unreachable and on_failure is "open" (503 when "closed")."""
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                return await self._on(self.limiter, op, quota, key, cost)
        except (StorageError, OSError, TimeoutError) as exc:
            if self.store_ok:
                log.warning("rate-limit store unreachable (%s); failing %s", type(exc).__name__, self.on_failure)
            self.store_ok = False
            if self.on_failure == "closed":
                raise Problem(
                    503,
                    "rate-limit-store-unavailable",
                    "Service unavailable",
                    "the rate-limit store cannot be reached; retry later",
                    headers={"Retry-After": "5"},
                ) from None
            return await self._on(self.fallback, op, quota, key, cost)

    async def _on(
        self, limiter: SlidingWindowCounterRateLimiter, op: str, quota: Quota, key: str, cost: int
    ) -> tuple[bool, int, float]:
        ok = await limiter.hit(quota.item, key, cost=cost) if op == "hit" else True
        stats = await limiter.get_window_stats(quota.item, key)
        if op == "test":  # from the stats alone: one store round trip, not two
            ok = stats.remaining >= cost
        if limiter is self.limiter and not self.store_ok:
            log.info("rate-limit store reachable again")
            self.store_ok = True
        return ok, stats.remaining, stats.reset_time

    async def check(self, quota: Quota, key: str, cost: int = 1, *, charge: bool = True) -> Verdict:
        ok, remaining, reset_at = await self._run("hit" if charge else "test", quota, key, cost)
        reset_s = max(0, math.ceil(reset_at - time.time()))
        return Verdict(quota, ok, remaining, max(1, reset_s) if not ok else reset_s)

    async def store_reachable(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                ok = bool(await self.storage.check())
        except (StorageError, OSError, TimeoutError):
            ok = False
        self.store_ok = ok
        return ok

    # ---- the three limits --------------------------------------------------------------------

    def client_address(self, request: Request) -> str:
        """The client's address: the peer's, or with PRECIS_TRUSTED_CLIENT_IP_HEADER set, the
        header's last (rightmost) entry, the one the nearest (trusted) proxy wrote. Without that
        setting a forwarded header is never read: any client could write one."""
        if self.trusted_header:
            value = request.headers.get(self.trusted_header, "")
            last = value.rsplit(",", 1)[-1].strip()
            if last:
                return last[:_MAX_ADDRESS_CHARS]
        return request.client.host if request.client else "unknown"

    async def refuse_if_auth_throttled(self, request: Request) -> None:
        """429 while the client address has used up its failed authentications, whatever key it
        sends now: answering a right key differently would keep the brute force going."""
        v = await self.check(self.failed_auth, self.client_address(request), charge=False)
        if not v.allowed:
            raise self.problem(v)

    async def failed_auth_attempt(self, request: Request) -> None:
        """Count one failed authentication; 429 (instead of 401) once over the limit."""
        v = await self.check(self.failed_auth, self.client_address(request))
        if not v.allowed:
            raise self.problem(v)

    async def charge(self, request: Request, quota: Quota, tenant: str, cost: int = 1) -> None:
        """Charge ``cost`` to the tenant's ``quota``; 429 when it does not fit. The verdict is
        kept for the response's RateLimit headers (RateLimitHeaders)."""
        v = await self.check(quota, tenant, cost)
        if not v.allowed:
            raise self.problem(v, cost)
        request.scope.setdefault("state", {}).setdefault(_STATE_KEY, []).append((v.share_left, self.headers(v)))

    # ---- answers -----------------------------------------------------------------------------

    def headers(self, v: Verdict) -> dict[str, str]:
        """The IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers) for one limit."""
        policy = v.quota.policy() if v.quota.name == "failed-auth" else self.tenant_policy
        return {
            "RateLimit-Limit": str(v.quota.limit),
            "RateLimit-Remaining": str(max(0, v.remaining)),
            "RateLimit-Reset": str(v.reset_s),
            "RateLimit-Policy": policy,
        }

    def problem(self, v: Verdict, cost: int = 1) -> Problem:
        unit = _UNITS[v.quota.name]
        who = "client address" if v.quota.name == "failed-auth" else "tenant"
        detail = f"{who} limit of {v.quota.limit} {unit} per minute reached"
        if v.quota.name == "bytes":
            detail += f" (this body is {cost} bytes, {max(0, v.remaining)} left)"
        detail += f"; retry in {v.reset_s} s"
        return Problem(
            429,
            "rate-limited",
            "Too many requests",
            detail,
            headers={**self.headers(v), "Retry-After": str(v.reset_s)},
            limit=v.quota.name,
            limit_value=v.quota.limit,
            limit_unit=unit,
            window_s=WINDOW_S,
            retry_after_s=v.reset_s,
        )


class RateLimitHeaders:
    """Adds the RateLimit header fields to a response whose request was charged (pure ASGI: no
    body buffering). Of the limits charged, it reports the one with the smallest share left (the
    draft lets a server name the quota closest to exhaustion); a 429 carries its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and (charged := state.get(_STATE_KEY)):
                headers = MutableHeaders(scope=message)
                if "ratelimit-limit" not in headers:
                    for k, val in min(charged, key=lambda c: c[0])[1].items():
                        headers[k] = val
            await send(message)

        await self.app(scope, receive, send_with_headers)
