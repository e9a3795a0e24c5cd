"""Appending to the event store (``ops.events``).

The event store is append-only (the database refuses UPDATE and DELETE). Each
aggregate has a gap-free version sequence; appends for one aggregate are serialized
with a transaction-scoped advisory lock so two workers cannot race for a version,
and every event carries an idempotency key so a retried step appends nothing twice.
Call inside the transaction that makes the state change the events describe.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

# The ledger statements in sql/queries.sql take this same lock (key = the job id, salt 7).
# Several aggregates are locked in one statement, in a fixed order (no lock cycles).
LOCK_AGGREGATES = """
SELECT count(pg_advisory_xact_lock(hashtextextended(a::text, 7)))
FROM (SELECT a FROM unnest($1::uuid[]) AS a ORDER BY a::text OFFSET 0) AS s
"""
# After the locks (a separate statement: a READ COMMITTED snapshot is taken per statement,
# so reading in the locking statement could miss a version committed while we waited),
# one statement numbers the events whose idempotency key is new (gap-free, in order per
# aggregate) and inserts them, for any number of aggregates: the versions, the key check
# and the insert cost one round trip together.
INSERT_EVENTS = """
INSERT INTO ops.events (workspace_id, aggregate_type, aggregate_id, version, event_type,
                        payload, metadata, idempotency_key, occurred_at)
SELECT e.workspace_id, e.aggregate_type, e.aggregate_id,
       v.version + row_number() OVER (PARTITION BY e.aggregate_id ORDER BY e.ord),
       e.event_type, e.payload::jsonb, e.metadata::jsonb, e.idempotency_key,
       coalesce(e.occurred_at, now())
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::timestamptz[])
       WITH ORDINALITY AS e(aggregate_id, workspace_id, aggregate_type, event_type, payload,
                            metadata, idempotency_key, occurred_at, ord)
CROSS JOIN LATERAL (SELECT coalesce(max(x.version), 0) AS version
                    FROM ops.events x WHERE x.aggregate_id = e.aggregate_id) AS v
WHERE NOT EXISTS (SELECT 1 FROM ops.events x WHERE x.idempotency_key = e.idempotency_key)
ON CONFLICT (idempotency_key) DO NOTHING
"""


@dataclass(frozen=True)
class NewEvent:
    """An event about to be appended; the version is assigned at append time."""

    aggregate_id: UUID
    event_type: str
    idempotency_key: str
    aggregate_type: str = "ingestion_job"
    workspace_id: UUID | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None


async def append_events(
    conn: asyncpg.Connection, events: Sequence[NewEvent], *, locked: bool = False
) -> int:
    """Append ``events`` in order; already-recorded idempotency keys are skipped.

    Returns how many were appended. Must run inside a transaction. ``locked``: an earlier
    statement of this transaction already took every aggregate's lock (the ledger queries
    take it in their RETURNING clause, same key), saving a round trip.
    """
    if not events:
        return 0
    if not locked:
        await conn.execute(LOCK_AGGREGATES, list({e.aggregate_id for e in events}))
    status = await conn.execute(
        INSERT_EVENTS,
        [e.aggregate_id for e in events],
        [e.workspace_id for e in events],
        [e.aggregate_type for e in events],
        [e.event_type for e in events],
        [json.dumps(e.payload, default=str) for e in events],
        [json.dumps(e.metadata, default=str) for e in events],
        [e.idempotency_key for e in events],
        [e.occurred_at for e in events],
    )
    return int(status.rsplit(" ", 1)[1])  # "INSERT 0 <n>"
