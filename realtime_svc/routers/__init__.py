"""realtime_svc's routers: ``/internal/summarize`` and the health probes."""
