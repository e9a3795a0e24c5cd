"""worker.queue.handoff without servers: the row budget, waiting jobs, and shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

from worker.queue.handoff import Handoffs


async def _job(rows: int, queued_after: asyncio.Event, finish: asyncio.Event, offer: Any) -> str:
    await queued_after.wait()
    offer.rows_queued(rows)
    await finish.wait()
    return "stored"


async def test_budget_admits_until_full_then_the_job_waits_for_freed_rows() -> None:
    handoffs = Handoffs(max_rows=10)
    go, finish_a, finish_b = asyncio.Event(), asyncio.Event(), asyncio.Event()
    outcomes: list[str] = []

    async def after(run: asyncio.Task[Any]) -> None:
        outcomes.append(run.result())

    offer_a = handoffs.offer()
    run_a = asyncio.create_task(_job(8, go, finish_a, offer_a))
    go.set()
    assert await offer_a.wait(run_a) is True
    assert handoffs.rows == 8  # reserved by the offer
    handoffs.adopt(run_a, offer_a.rows, timeout_s=10, after=after)
    assert (handoffs.rows, len(handoffs)) == (8, 1)

    offer_b = handoffs.offer()
    run_b = asyncio.create_task(_job(5, go, finish_b, offer_b))
    waiting = asyncio.create_task(offer_b.wait(run_b))
    await asyncio.sleep(0.01)
    assert not waiting.done() and handoffs.waiting == 1  # 8 + 5 > 10: keeps its slot
    finish_a.set()  # A is stored: its 8 rows are released, B fits now
    assert await waiting is True and handoffs.waiting == 0
    handoffs.adopt(run_b, offer_b.rows, timeout_s=10, after=after)
    finish_b.set()
    assert await handoffs.drain(5) == 0
    assert outcomes == ["stored", "stored"] and handoffs.rows == 0


async def test_a_run_that_ends_before_queueing_rows_is_not_handed_off() -> None:
    handoffs = Handoffs(max_rows=10)
    offer = handoffs.offer()
    run = asyncio.create_task(asyncio.sleep(0, result={"status": "noop"}))
    assert await offer.wait(run) is False
    assert run.result() == {"status": "noop"}


async def test_disabled_budget_never_hands_off() -> None:
    handoffs = Handoffs(max_rows=0)
    offer = handoffs.offer()
    go, finish = asyncio.Event(), asyncio.Event()
    run = asyncio.create_task(_job(1, go, finish, offer))
    go.set()
    waiter = asyncio.create_task(offer.wait(run))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # rows queued, but it keeps its slot until the run ends
    finish.set()
    assert await waiter is False


async def test_timeout_and_shutdown_cancel_runs_and_still_report_them() -> None:
    handoffs = Handoffs(max_rows=100)
    seen: list[bool] = []

    async def after(run: asyncio.Task[Any]) -> None:
        seen.append(run.cancelled())

    handoffs.rows = 2  # as two offers would have reserved
    slow = asyncio.create_task(asyncio.sleep(60))
    handoffs.adopt(slow, 1, timeout_s=0.05, after=after)  # the job timeout
    stuck = asyncio.create_task(asyncio.sleep(60))
    handoffs.adopt(stuck, 1, timeout_s=60, after=after)
    await asyncio.sleep(0.2)
    assert slow.cancelled() and seen == [True]
    assert await handoffs.drain(0.05) == 1  # shutdown: the other one is cancelled
    assert stuck.cancelled() and seen == [True, True] and handoffs.rows == 0


async def test_pages_wait_for_room_among_the_items_in_flight() -> None:
    from worker.queue.admission import Admission

    admission = Admission(max_items=150)
    await admission.take(100)
    second = asyncio.create_task(admission.take(100))
    await asyncio.sleep(0)
    assert not second.done() and admission.waiting == 1  # 200 > 150: it waits
    admission.give(60)
    await asyncio.sleep(0)
    assert second.done() and admission.items == 140
    admission.give(140)
    await admission.take(500)  # bigger than the ceiling: runs alone, never stuck
    assert admission.items == 500
