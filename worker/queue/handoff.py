"""Handing a job's queue slot back while its rows wait for an embedding request.

Why: a request holds up to 300k tokens. If every job kept its queue slot until its rows
are stored, a bulk load of short emails (a few hundred tokens each) could never fill
one: with ``WORKER_CONCURRENCY`` slots all waiting on the batcher, requests go out
partly full (x1.36 the minimum on the benchmark's large corpus). A job whose rows are
queued in the batcher needs no slot to wait: the rest of its run (vectors, store,
record) goes on as a tracked task here and the queue starts another job.

Memory stays bounded by rows, not jobs: a job is handed off only while the rows of all
handed-off jobs stay within ``handoff_max_rows`` (a few full requests' worth); past
that, a job keeps its slot as before. Nothing here knows the queue: ``worker.queue.jobs`` decides
what a handed-off job's failure means for the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger("worker.queue.handoff")


class Offer:
    """One job's chance to be handed off; ``rows_queued`` is the batcher's hook."""

    def __init__(self, owner: Handoffs) -> None:
        self._owner = owner
        self.rows = 0
        self._queued = asyncio.Event()

    def rows_queued(self, rows: int) -> None:
        if not self._queued.is_set():  # the first embed call decides (a streamed item
            self.rows = rows  # queues its windows one by one)
            self._queued.set()

    async def wait(self, run: asyncio.Task[Any]) -> bool:
        """Wait until ``run`` ends (False) or has queued rows that the budget admits
        (True: the rows are reserved; the caller hands it off with ``adopt`` or gives
        them back with ``release``). Over the budget, the job keeps its slot and is
        handed off as soon as handed-off jobs free enough rows."""
        owner = self._owner
        if owner.max_rows <= 0:
            await asyncio.wait({run})
            return False
        queued = asyncio.ensure_future(self._queued.wait())
        try:
            await asyncio.wait({run, queued}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            queued.cancel()
        while not run.done() and self._queued.is_set():
            if owner.admits(self.rows):
                owner.rows += self.rows  # reserved now: the caller adopts or releases
                return True
            freed = asyncio.ensure_future(owner.freed.wait())
            owner.waiting += 1
            try:
                await asyncio.wait({run, freed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                owner.waiting -= 1
                freed.cancel()
        return False


class Handoffs:
    """The handed-off jobs of one worker process, and their row budget."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.rows = 0
        self._runs: dict[asyncio.Task[None], asyncio.Task[Any]] = {}  # follower -> run
        # Jobs whose rows are queued but that keep their slot for want of budget: the
        # slots that cannot start another job (the batcher's backlog probe counts them).
        self.waiting = 0
        self.freed = asyncio.Event()  # set (and replaced) whenever rows are released

    @property
    def enabled(self) -> bool:
        return self.max_rows > 0

    def offer(self) -> Offer:
        return Offer(self)

    def release(self, rows: int) -> None:
        self.rows -= rows
        self.freed.set()
        self.freed = asyncio.Event()

    def admits(self, rows: int) -> bool:
        return self.rows == 0 or self.rows + rows <= self.max_rows

    def __len__(self) -> int:
        return len(self._runs)

    def adopt(
        self,
        run: asyncio.Task[Any],
        rows: int,
        *,
        timeout_s: float,
        after: Callable[[asyncio.Task[Any]], Awaitable[None]],
    ) -> None:
        """Track ``run`` (its ``rows``, reserved by ``Offer.wait``, count against the
        budget until it ends); cancel it after ``timeout_s`` as the queue's job timeout
        would; then ``after(run)`` deals with its outcome (``run`` is done: result,
        exception or cancelled)."""

        async def follow() -> None:
            try:
                done, _ = await asyncio.wait({run}, timeout=timeout_s)
                if not done:
                    run.cancel()
                    with contextlib.suppress(BaseException):
                        await run
                await after(run)
            except Exception:  # noqa: BLE001 - a follower must never die silently
                log.exception("handoff.follow_failed")
            finally:
                self.release(rows)

        task = asyncio.create_task(follow(), name="handed-off-job")
        self._runs[task] = run
        task.add_done_callback(lambda t: self._runs.pop(t, None))

    async def drain(self, timeout_s: float) -> int:
        """Wait for the handed-off jobs (at shutdown, before the pool and batcher close);
        cancel those still running after ``timeout_s``. Returns how many were cancelled:
        their ledger rows stay running and the reconciler re-enqueues them."""
        if not self._runs:
            return 0
        _, pending = await asyncio.wait(set(self._runs), timeout=timeout_s)
        for task in pending:
            self._runs[task].cancel()  # its follower still records the outcome
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            log.warning("handoff.cancelled_at_shutdown", jobs=len(pending))
        return len(pending)
