"""A connector process for the cursor fault tests: ``python -m tests.support.connector_proc``.

It pages through a synthetic source of ``ITEMS`` messages, ``PAGE`` at a time, the way a
connector should: start from the stored cursor (``worker.client.read_cursor``), send each
page with the cursor that follows it (``enqueue_many(..., cursor=...)``), keep no state
of its own. It writes ``begin N`` / ``end N`` to ``PROGRESS`` around each page and
``done`` at the end, so the test can SIGKILL it inside a page or between pages.
Everything comes from the environment: DATABASE_URL, REDIS_URL, QUEUE_NAME, WORKSPACE,
ITEMS, PAGE, PROGRESS.
"""

from __future__ import annotations

import asyncio
import os
import uuid

from tests.support.harness import communication
from worker import client
from worker.core.settings import Settings
from worker.db.pool import create_pool


def item(ws: uuid.UUID, i: int) -> dict[str, object]:
    return communication(ws, f"src-{i}", f"Source message {i}: the plan for week {i % 52}.")


async def run() -> None:
    settings = Settings()
    ws = uuid.UUID(os.environ["WORKSPACE"])
    total, size = int(os.environ["ITEMS"]), int(os.environ["PAGE"])
    progress = open(os.environ["PROGRESS"], "a", buffering=1)  # noqa: SIM115, ASYNC230
    db = await create_pool(settings, settings.database_url or "", min_size=1, max_size=2)
    redis = await client.connect(settings.redis_url or "")
    try:
        position = await client.read_cursor(db, ws, "gmail", "inbox") or 0
        while position < total:
            page = [item(ws, i) for i in range(position, min(position + size, total))]
            after = position + len(page)
            progress.write(f"begin {position}\n")
            await client.enqueue_many(
                redis,
                page,
                db=db,
                settings=settings,
                cursor=client.Cursor(ws, "gmail", "inbox", after),
            )
            progress.write(f"end {position}\n")
            position = after
            await asyncio.sleep(0.01)  # between pages: where a connector waits on its source
        progress.write("done\n")
    finally:
        await redis.aclose()
        await db.close()


if __name__ == "__main__":
    asyncio.run(run())
