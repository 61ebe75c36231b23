"""The gateway's own Prometheus metrics (the shared HTTP ones are in common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter

ROUTED = Counter("precis_gateway_routed_total", "Requests routed by mode", ["mode", "reason"])
UPSTREAM_RETRIES = Counter(
    "precis_gateway_upstream_retries_total", "Realtime calls sent again after a connection died before any response"
)
