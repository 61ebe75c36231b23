"""The gateway's own Prometheus metrics (the shared HTTP ones are in common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter

# Once per submit, by the path it took: reason explicit (mode set), threshold (mode=auto by
# length) or spilled_over (mode=auto, short, but realtime refused it unstarted: an async job).
ROUTED = Counter("precis_gateway_routed_total", "Requests routed by mode", ["mode", "reason"])
SPILLOVER = Counter(
    "precis_gateway_spillover_total",
    "mode=auto requests realtime refused before starting, made async jobs instead, by reason",
    ["reason"],
)
UPSTREAM_RETRIES = Counter(
    "precis_gateway_upstream_retries_total", "Realtime calls sent again after a connection died before any response"
)
