"""Where one run stands with the shared embedding batcher and with its queue slot.

Why one object: the batcher lingers while runs are *on the way* to it (announced and not
yet arrived), and the job layer gives a job's queue slot back once its rows are queued.
Both must hear from the embed call deep inside a run, and a run that waits for a large-item
slot must stop being waited for meanwhile. The job layer hands its announcement and its
hand-off hook over in the ``Delivery``; the pipeline keeps them here, with the run's other
flow state, and passes this one object through its stages.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

Announce = Callable[[], Callable[[], None]]


@dataclass
class Flow:
    """One run's flow state (made by ``Pipeline.run`` from its ``Delivery``)."""

    expect: Announce  # the batcher's ``expect``: announce this run again
    arrival: Callable[[], None] | None = None  # the current announcement, until it arrives
    rows_queued: Callable[[int], None] | None = None  # the job layer's hand-off hook
    together: bool = False  # an item of a page job: its statements join its neighbours'
    large_slot: bool = False  # holds one of the LARGE_ITEMS_MAX slots
    live: bool = False  # a live item (worker.core.priority): its rows go ahead of bulk rows

    def arrived(self) -> None:
        """The run's rows are queued, or it will queue none: stop being waited for."""
        if self.arrival is not None:
            arrival, self.arrival = self.arrival, None
            arrival()

    def queued(self, rows: int) -> None:
        """An embed call queued ``rows``: arrived, and the job layer may hand off."""
        self.arrived()
        if self.rows_queued is not None:
            self.rows_queued(rows)

    @contextlib.asynccontextmanager
    async def holding(self, slots: asyncio.Semaphore) -> AsyncIterator[None]:
        """Hold one of ``slots`` for the block (none to take if one is held already).

        Not on the way to the batcher while waiting for it (requests must not linger for
        a run that cannot go on); announced again once it has one, until the block ends.
        """
        if self.large_slot:
            yield
            return
        self.arrived()
        async with slots:
            self.large_slot = True
            self.arrival = self.expect()
            try:
                yield
            finally:
                self.arrived()
                self.large_slot = False
