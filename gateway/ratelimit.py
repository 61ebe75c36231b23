"""Per-tenant token bucket.

Hand-written on purpose: it is a dozen lines, in-process and lock-free on one event loop; a library
(e.g. `limits`) would add a storage backend we don't need. Each gateway replica limits on its own,
so the cluster-wide rate is replicas × this rate (documented in docs/deploy.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class _Bucket:
    tokens: float
    stamp: float = field(default_factory=time.monotonic)


class TokenBucketLimiter:
    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, now: float | None = None) -> float:
        """Take one token; returns 0 when allowed, else seconds until one is available."""
        now = time.monotonic() if now is None else now
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(tokens=self.burst, stamp=now)
        b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate)
        b.stamp = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / self.rate
