"""realtime_svc's estimate of how long a new summary would wait before Triton starts on it.

The gateway sends ``mode=auto`` requests with a bound (``Precis-Max-Wait-Ms``, common/schemas.py):
over it, this service refuses at once (503, ``Precis-Refused-Before-Start: realtime_wait_too_long``)
and the gateway makes the text an async job instead. The refusal happens before the Triton call,
so a spilled request never costs model time on both paths.

The estimate: the summaries in flight here × the recent *busy time per completed summary*. That
time is measured between completions while at least one summary is in flight (an idle gap is not
counted), so it is the inverse of the throughput while busy and already includes Triton's dynamic
batching (a batch of 8 that takes 2 s completes 8 summaries: 0.25 s each) and the other work on
the same model server (locally one Triton serves the worker too). It is smoothed with an
exponentially weighted moving average.

Hand-written: an EWMA is three lines, and no library in the service's dependencies gives one
(prometheus_client's Histogram/Summary export observations but keep no recent mean in process);
this is the whole state, updated on the event loop (no lock: one thread).
"""

from __future__ import annotations

import time

# Weight of the newest sample. Samples within a batch are uneven (the first summary of a batch
# carries the batch's time, the others about 0), so a small weight, averaging over ~10 completions,
# keeps the estimate near the mean instead of swinging with each one.
EWMA_ALPHA = 0.1


class ServiceTime:
    """Busy time per completed summary (EWMA) and the wait it implies for a new one."""

    def __init__(self, alpha: float = EWMA_ALPHA) -> None:
        self.alpha = alpha
        self.per_summary_s: float | None = None  # None until the first completion
        self._mark: float | None = None  # start of the busy time the next completion is charged

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def started(self, in_flight_before: int) -> None:
        """A summary goes to Triton; ``in_flight_before`` summaries were already in flight."""
        if in_flight_before == 0:  # busy from now: an idle gap is no one's service time
            self._mark = self.now()

    def finished(self, *, completed: bool) -> None:
        """A summary's Triton call returned. Only a completed summary is a sample; the busy time
        of a failed one is charged to the next completion while the service stays busy (it was
        spent all the same)."""
        if not completed or self._mark is None:
            return
        t = self.now()
        sample = t - self._mark
        self._mark = t
        prev = self.per_summary_s
        self.per_summary_s = sample if prev is None else prev + self.alpha * (sample - prev)

    def estimated_wait_s(self, in_flight: int) -> float:
        """Seconds until the summaries in flight are done (0 without a sample yet: the in-flight
        cap still bounds a cold service)."""
        return in_flight * (self.per_summary_s or 0.0)
