"""The worker's schedulers, as pure logic: model-call slots shared round-robin between tenants
(worker/mapreduce.py FairSlots) and the byte budget of documents held at once
(worker/runner.py ByteBudget)."""

from __future__ import annotations

import asyncio

from worker.mapreduce import FairSlots
from worker.runner import ByteBudget


async def _order(slots: FairSlots, calls: list[str]) -> list[str]:
    """Queue ``calls`` (tenant names, in arrival order) behind a held slot; the serving order."""
    served: list[str] = []
    gate = asyncio.Event()

    async def call(tenant: str) -> None:
        async with slots.slot(tenant):
            served.append(tenant)
            await asyncio.sleep(0)

    async with slots.slot("holder"):
        tasks = []
        for t in calls:
            tasks.append(asyncio.create_task(call(t)))
            await asyncio.sleep(0)  # arrive in this order
        gate.set()
    await asyncio.gather(*tasks)
    return served


async def test_a_small_tenant_is_served_after_one_call_of_a_big_one_not_after_all():
    served = await _order(FairSlots(1), ["A"] * 10 + ["B"])
    assert served.index("B") == 1, served  # a FIFO semaphore serves B eleventh


async def test_tenants_alternate_and_each_tenant_keeps_its_order():
    served = await _order(FairSlots(1), ["A", "A", "A", "B", "B", "C"])
    assert served == ["A", "B", "C", "A", "B", "A"]


async def test_the_bound_holds_and_a_cancelled_waiter_gives_its_turn_on():
    slots = FairSlots(2)
    inside = 0
    most = 0

    async def call(tenant: str) -> None:
        nonlocal inside, most
        async with slots.slot(tenant):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.001)
            inside -= 1

    tasks = [asyncio.create_task(call("AB"[i % 2])) for i in range(20)]
    await asyncio.sleep(0)
    tasks[7].cancel()
    tasks[8].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert most == 2
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 2
    assert slots.busy == 0 and slots.waiting() == 0


async def test_documents_held_at_once_stay_within_the_byte_budget():
    budget = ByteBudget(10)
    held = 0
    most = 0

    async def job(size: int) -> None:
        nonlocal held, most
        async with budget.hold(size):
            held += min(size, 10)
            most = max(most, held)
            await asyncio.sleep(0.001)
            held -= min(size, 10)

    await asyncio.gather(*(job(s) for s in [6, 6, 3, 4, 25, 1, 9]))  # 25: over the budget, runs alone
    assert most <= 10
    assert budget.used == 0
