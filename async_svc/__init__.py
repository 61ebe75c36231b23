"""async_svc: job intake for long texts (claim-check in the store, transactional outbox to Kafka)."""
