"""Ledger payload retention, a step of the nightly maintenance pass.

``ops.ingestion_jobs.payload`` holds each job as the connector sent it, message bodies
included, and used to be kept forever: the ledger grew with every byte ever ingested
(and held personal data with no end date). It is needed while the job may have to be
replayed, i.e. while it is queued or running (the reconciler re-enqueues it from there);
a finished job is never replayed from the ledger (a re-sent done or skipped job is a
recorded no-op, a re-sent failed job carries its payload and puts it back in the row).
So a job's payload is dropped ``LEDGER_PAYLOAD_RETENTION`` after it finished; the row
keeps what it was: content hash, status, error, result, and the payload's size
(``result.payload_bytes``, JSON text bytes; ``result.payload_pruned_at``).

**Batches, no long locks.** The rows are walked by primary key, ``batch_rows`` at a time,
one statement (one short transaction) per batch on the bookkeeping connection (the
worker's role, the ledger's writer). Rows another transaction holds are skipped (``SKIP
LOCKED``), not waited for; the next pass takes them. A row already pruned is not selected
again, so a second pass is a no-op and an interrupted one loses nothing.

**Dry run** counts what would be dropped (rows, stored bytes) and changes nothing.

The space comes back to PostgreSQL once (auto)vacuum has run: an UPDATE leaves the old
row version and its TOAST chunks dead until then; plain VACUUM makes them reusable, it
does not shrink the files (``bench/NOTES.md`` has the measured sizes). Nothing here
vacuums: autovacuum sees the dead TOAST tuples like any others.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import structlog

from worker.db import ledger

log = structlog.get_logger(__name__)

#: Rows per statement: on the bench's mail corpus ~12 MB of payloads and ~0.1 s of row
#: locks on the batch's (finished) rows; a worker recording a re-sent job as a no-op
#: waits that long at most (bench/NOTES.md).
BATCH_ROWS = 2000


@dataclass
class Outcome:
    """What the step dropped (or, in a dry run, would drop): the action's ``details``."""

    retention_s: float
    rows: int = 0
    batches: int = 0
    payload_bytes: int = 0  # JSON text of the dropped payloads (not counted in a dry run)
    stored_bytes: int = 0  # as stored (compressed, TOAST): what vacuum gives back

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def prune(
    conn: asyncpg.Connection,
    retention: timedelta,
    *,
    dry_run: bool = False,
    batch_rows: int = BATCH_ROWS,
) -> Outcome:
    """Drop the payloads of jobs finished more than ``retention`` ago, ``batch_rows`` rows
    per statement, until a batch comes back short (the end of the table)."""
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    out = Outcome(retention.total_seconds())
    if dry_run:
        out.rows, out.stored_bytes = await ledger.prunable_payloads(conn, out.retention_s)
        return out
    after = ledger.FIRST_ID
    while True:
        batch = await ledger.prune_payloads(conn, out.retention_s, after, batch_rows)
        out.batches += 1
        out.rows += batch.rows
        out.payload_bytes += batch.payload_bytes
        out.stored_bytes += batch.stored_bytes
        log.debug(
            "maintenance.ledger_retention_batch",
            batch=out.batches,
            rows=batch.rows,
            payload_bytes=batch.payload_bytes,
        )
        if batch.rows < batch_rows or batch.last_id is None:
            return out
        after = batch.last_id
