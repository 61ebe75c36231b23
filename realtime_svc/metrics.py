"""realtime_svc's own Prometheus metrics (the shared HTTP ones are in common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from common.metrics import LATENCY_BUCKETS

INFER_LATENCY = Histogram("precis_realtime_infer_seconds", "Triton call latency (realtime)", buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge("precis_realtime_in_flight", "Realtime summaries in flight")
ERRORS = Counter("precis_realtime_errors_total", "Realtime failures by kind", ["kind"])
