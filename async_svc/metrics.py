"""async_svc's own Prometheus metrics (the shared HTTP ones are in common.metrics)."""

from __future__ import annotations

from prometheus_client import Histogram

INTAKE_BATCH = Histogram(
    "precis_intake_commit_batch_jobs",
    "Jobs written per intake transaction (async_svc group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
