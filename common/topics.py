"""``python -m common.topics`` — create the Kafka topics (idempotent)."""

from common.kafka import main

if __name__ == "__main__":
    raise SystemExit(main())
