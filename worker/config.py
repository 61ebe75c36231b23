from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from common.settings import (
    ChunkingSettings,
    HttpServerSettings,
    KafkaSettings,
    StoreSettings,
    TokenizerSettings,
    TritonSettings,
    load_settings,
)
from common.store.retention import RetentionSettings  # PRECIS_RETENTION_DAYS: finishing a job stamps expires_at


class WorkerSettings(
    HttpServerSettings,
    StoreSettings,
    KafkaSettings,
    TritonSettings,
    TokenizerSettings,
    ChunkingSettings,
    RetentionSettings,
):
    """Map-reduce of async jobs: the store, the broker, Triton (batch pool) and the tokenizer."""

    service_name: str = "worker"
    group_id: str = "precis-worker"
    max_attempts: int = Field(default=3, ge=1, le=20)
    retry_backoff_s: float = Field(default=5.0, ge=0)
    retry_backoff_max_s: float = Field(default=120.0, ge=0)
    # Transient Triton errors are retried in place this many times before the job-level retry.
    call_retries: int = Field(default=3, ge=1)
    triton_timeout_s: float = Field(default=300.0, gt=0)
    # Summaries in flight to Triton from this worker, across all its jobs: two of Triton's
    # batches (max_batch_size 16), one executing and the next already waiting in Triton's queue.
    # With only one batch in flight, the calls that follow a finished batch trickle in (each
    # waits for its checkpoint write) and the dynamic batcher started the next long execution with
    # 2-5 of them (measured: mean batch 8.4 instead of 16; docs/performance.md).
    max_in_flight_calls: int = Field(default=32, ge=1)
    # Records taken per poll (across partitions); those of one partition run together (batch
    # drain), so many short jobs fill Triton's dynamic batches.
    max_poll_records: int = Field(default=16, ge=1, le=500)
    # UTF-8 bytes of the documents this worker holds at once (worker/runner.py ByteBudget): a
    # poll of 16 jobs of 10 MB each would otherwise hold 160 MB of text, plus its chunks. A
    # document over the budget runs alone.
    max_document_bytes_in_flight: int = Field(default=48 * 1024 * 1024, ge=1024 * 1024)
    # Kafka fetch bounds (the records are small: the document stays in the store).
    fetch_max_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    max_partition_fetch_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)
    lease_ttl_s: float = Field(default=30.0, ge=2)
    drain_timeout_s: float = Field(default=60.0, ge=0)
    session_timeout_ms: int = Field(default=15000, ge=6000)
    max_poll_interval_ms: int = Field(default=300000, ge=10000)


@lru_cache
def get_settings() -> WorkerSettings:
    # start-up: a bad setting exits with its name and reason, never its value
    return load_settings(WorkerSettings)
