"""The gateway's routers: the public ``/v1/summaries`` API and the health probes."""
