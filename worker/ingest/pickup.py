"""The receive stage's ledger pickups, written in groups.

A page job's items (``jobs.ingest_page``) all start at once; each must be marked running
(or found finished) in the ledger, with its event, before anything else happens. One
transaction per item is four round trips and a commit each, on the event loop every
item start waits for. ``Pickups`` hands the pickups that arrive together to
``ledger.start_many``, one transaction for the group (``grouping.GroupWriter``).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from worker.core.settings import Settings
from worker.db import ledger
from worker.ingest.grouping import GroupWriter


class Pickups:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool
        self.grouped = settings.group_write_max_items > 1
        self.writer: GroupWriter[ledger.Start, ledger.Pickup] = GroupWriter(
            self._page,
            self._one,
            lambda s: s.ref.job_id,
            writers=settings.group_write_connections,
            max_items=settings.group_write_max_items,
        )

    async def start(self, start: ledger.Start, *, together: bool = True) -> ledger.Pickup:
        """Start the job (or find it finished); ``asyncpg.ForeignKeyViolationError``: its
        workspace does not exist (nothing recorded). ``together=False`` (a job of its own,
        handed over by the queue one at a time) starts it alone, at once: grouping such
        jobs woke them in batches, so the batcher more often found nobody on the way while
        the queue's last jobs were still being handed over, and sent more requests."""
        return await (self.writer.submit(start) if together else self._one(start))

    async def _one(self, s: ledger.Start) -> ledger.Pickup:
        async with self.pool.acquire() as conn:
            return await ledger.start(conn, s)

    async def _page(self, starts: Sequence[ledger.Start]) -> list[ledger.Pickup | Exception]:
        if not self.grouped or len(starts) == 1:
            # (one alone: receive_and_start records a job sent straight to Redis in the
            # same transaction; start_many would need a second one for it)
            return [await self._one(s) for s in starts]
        out: list[ledger.Pickup | Exception] = []
        async with self.pool.acquire() as conn:
            pickups = await ledger.start_many(conn, starts)
            for s, pickup in zip(starts, pickups, strict=True):
                if pickup is not None:
                    out.append(pickup)
                    continue
                # No ledger row yet (sent straight to Redis): recorded on its own, so an
                # unknown workspace fails that job alone; the page has committed.
                try:
                    out.append(await ledger.start(conn, s))
                except Exception as exc:  # noqa: BLE001 - that job's own failure
                    out.append(exc)
        return out

    async def aclose(self) -> None:
        await self.writer.aclose()
