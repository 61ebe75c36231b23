"""gateway: the public API. Auth (API key → tenant), limits, routing by token count, proxying."""
