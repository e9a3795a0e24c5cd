"""How many items of page jobs one worker runs at once.

Why: a page job carries up to ``ENQUEUE_JOB_ITEMS`` (100) items and arq hands a worker up to
``WORKER_CONCURRENCY`` (256) jobs, so a backfill could put 25,000 item runs in one process:
every one of them waiting on the same event loop and the same connection pool, the
process's memory growing with them, and a fresh e-mail (``worker.core.priority``) queued
behind thousands of pool acquisitions although arq took it at once. Pages wait here,
before their items start, until the items already running leave room for theirs
(``PAGE_ITEMS_IN_FLIGHT``); a page bigger than that runs alone. Single-item jobs (live
e-mail among them) never wait here.
"""

from __future__ import annotations

import asyncio


class Admission:
    """A count of items in flight with a ceiling; ``take`` waits for room."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self.items = 0
        self.waiting = 0
        self._freed = asyncio.Event()

    def _room(self, n: int) -> bool:
        return self.items == 0 or self.items + n <= self.max_items

    async def take(self, n: int) -> None:
        """Wait until ``n`` more items fit (at once when nothing runs), then count them."""
        self.waiting += 1
        try:
            while not self._room(n):
                self._freed.clear()
                await self._freed.wait()
        finally:
            self.waiting -= 1
        self.items += n

    def give(self, n: int = 1) -> None:
        """``n`` items finished (or queued their rows): room for waiting pages."""
        self.items = max(0, self.items - n)
        self._freed.set()
