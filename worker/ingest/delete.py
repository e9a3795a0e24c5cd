"""The store and record stages of a deletion (nothing to fetch, chunk or embed).

A deletion claims its item as every write does (``write.claim_item``: the item's lock, the
ledger row; a deletion recorded before the item's stored version was, i.e. the item came
back after it, is skipped as superseded), removes the item's rows (``worker.db.delete``)
and records ``content.deleted`` (counts only) with ``job.completed`` in the same
transaction: the rows go and the tombstone appears together, or neither.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from worker.core.payloads import DeletionPayload
from worker.db import ledger
from worker.db.delete import delete_item
from worker.ingest.job import Job, outcome
from worker.ingest.write import claim_item


class DeleteWrite:
    """Deletions, each in one transaction of its own."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def write(self, job: Job) -> dict[str, Any]:
        payload = job.payload
        assert isinstance(payload, DeletionPayload)
        async with self.pool.acquire() as conn, conn.transaction():
            if (early := await claim_item(conn, job, job.progress)) is not None:
                return early
            deleted = await delete_item(conn, job.ref, payload, job.queued_at)
            result = deleted.as_dict()
            counts = {k: v for k, v in result.items() if k != "deleted"}
            await ledger.finish(
                conn,
                job.ref,
                ledger.JOB_COMPLETED,
                result=result,
                extra_events=[*job.progress, job.ref.event(ledger.CONTENT_DELETED, **counts)],
                locked=True,
            )
        return outcome("done", **result)
