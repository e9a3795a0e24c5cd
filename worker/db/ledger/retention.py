"""Payload retention: the ledger's statements that drop finished jobs' payloads.

A ledger row keeps its job's ``payload`` (message bodies included) so that a job the
transport lost can be enqueued again (``worker.queue.reconcile``, queued and running rows
only). Once the job is finished nothing reads it: a re-sent done or skipped job is a
``job.noop`` decided on the row's status, and a failed job that runs again brings its
payload back (``jobs.receive_and_start``, ``pages.start_many``). So the nightly maintenance
drops it after ``LEDGER_PAYLOAD_RETENTION`` (``worker.maintenance.retention`` walks the
batches); the statements live here because this package is the one writer of the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from worker.db.queries import Q

#: Where a walk over the ledger's primary key starts (below every job id).
FIRST_ID = UUID(int=0)


@dataclass(frozen=True)
class PrunedBatch:
    """One batch's outcome: rows whose payload was dropped, the last job id it took (the
    next batch starts after it), the payloads' size as JSON text and as stored."""

    rows: int
    last_id: UUID | None
    payload_bytes: int
    stored_bytes: int


async def prune_payloads(
    conn: asyncpg.Connection, older_than_s: float, after: UUID, limit: int
) -> PrunedBatch:
    """Drop the payload of up to ``limit`` jobs finished more than ``older_than_s`` seconds
    ago, with ids after ``after``, in one statement (its own transaction unless the caller
    opened one); rows another transaction holds are skipped. Fewer than ``limit`` rows:
    the walk reached the end of the table."""
    row = await conn.fetchrow(Q.ledger_prune_payloads, older_than_s, after, limit)
    return PrunedBatch(
        int(row["rows"]), row["last_id"], int(row["payload_bytes"]), int(row["stored_bytes"])
    )


async def prunable_payloads(conn: asyncpg.Connection, older_than_s: float) -> tuple[int, int]:
    """What ``prune_payloads`` would drop now (a dry run): rows, stored bytes. Read-only."""
    row = await conn.fetchrow(Q.ledger_prunable_payloads, older_than_s)
    return int(row["rows"]), int(row["stored_bytes"])
