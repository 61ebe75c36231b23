"""async_svc's routers: ``/internal/jobs`` and the health probes."""
