"""The platform's Kafka topics: names, partitions, retention. ``python -m common.topics`` creates
them (idempotent; the Helm chart's pre-install/pre-upgrade hook Job runs exactly that)."""

from __future__ import annotations

from dataclasses import dataclass

from common.settings import KafkaSettings, load_settings

JOBS = "precis.jobs"
JOBS_RETRY = "precis.jobs.retry"
JOBS_DLQ = "precis.jobs.dlq"
EVENTS = "precis.events"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


WEEK_MS = str(7 * 24 * 3600 * 1000)


def topic_specs(s: KafkaSettings) -> tuple[TopicSpec, ...]:
    return (
        TopicSpec(JOBS, s.kafka_jobs_partitions, {"retention.ms": WEEK_MS}),
        TopicSpec(JOBS_RETRY, s.kafka_jobs_partitions, {"retention.ms": WEEK_MS}),
        TopicSpec(JOBS_DLQ, 1, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
        TopicSpec(EVENTS, s.kafka_events_partitions, {"retention.ms": WEEK_MS}),
    )


def main() -> int:
    import asyncio
    import logging

    from common.kafka import ensure_topics  # the admin client lives with the other clients

    logging.basicConfig(level=logging.INFO)
    s = load_settings(KafkaSettings)
    asyncio.run(ensure_topics(s))
    print("topics ready:", ", ".join(f"{t.name}({t.partitions})" for t in topic_specs(s)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
