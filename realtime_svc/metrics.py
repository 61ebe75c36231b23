"""realtime_svc's own Prometheus metrics (the shared HTTP ones are in common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from common.metrics import LATENCY_BUCKETS

INFER_LATENCY = Histogram("precis_realtime_infer_seconds", "Triton call latency (realtime)", buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge("precis_realtime_in_flight", "Realtime summaries in flight")
ERRORS = Counter("precis_realtime_errors_total", "Realtime failures by kind", ["kind"])
# Refusals before any generation (503 with Precis-Refused-Before-Start), by SpillReason; the
# in-flight cap's are also ERRORS{kind="shed"} and Triton's queue-full ERRORS{kind="overloaded"}.
REFUSED = Counter("precis_realtime_refused_total", "Summaries refused before any generation started", ["reason"])
SERVICE_TIME = Gauge(
    "precis_realtime_service_time_seconds",
    "Recent busy time per completed summary (EWMA): the wait estimate is in-flight x this",
)
