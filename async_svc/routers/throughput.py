"""``GET /internal/throughput``: the workers' recent pace and the queue ahead, for the gateway's
dry-run estimate (signed like every internal call; async_svc/throughput.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from async_svc.deps import StateDep, verified_tenant
from async_svc.throughput import queue_ahead, recent_throughput
from common.schemas import ThroughputReport

router = APIRouter(dependencies=[Depends(verified_tenant)])


@router.get("/internal/throughput", response_model=ThroughputReport)
async def throughput(state: StateDep) -> ThroughputReport:
    pace, calls_per_byte = await recent_throughput(state.db)
    queue = await queue_ahead(state.db, calls_per_byte)
    return ThroughputReport(throughput=pace, queue=queue, max_document_bytes=state.settings.max_document_bytes)
