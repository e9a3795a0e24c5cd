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

LOCK_AGGREGATE = "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 7))"
# After the lock (a separate statement: a READ COMMITTED snapshot is taken per statement,
# so reading in the locking statement could miss a version committed while we waited).
VERSION_AND_KEYS = """
SELECT coalesce((SELECT max(version) FROM ops.events WHERE aggregate_id = $1), 0) AS version,
       coalesce((SELECT array_agg(idempotency_key) FROM ops.events
                 WHERE idempotency_key = ANY($2::text[])), '{}') AS existing
"""
INSERT_EVENT = """
INSERT INTO ops.events (workspace_id, aggregate_type, aggregate_id, version, event_type,
                        payload, metadata, idempotency_key, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, coalesce($9, now()))
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


async def append_events(conn: asyncpg.Connection, events: Sequence[NewEvent]) -> int:
    """Append ``events`` in order; already-recorded idempotency keys are skipped.

    Returns how many were appended. Must run inside a transaction.
    """
    if not events:
        return 0
    appended = 0
    by_aggregate: dict[UUID, list[NewEvent]] = {}
    for event in events:
        by_aggregate.setdefault(event.aggregate_id, []).append(event)
    for aggregate_id in sorted(by_aggregate, key=str):  # fixed order: no lock cycles
        group = by_aggregate[aggregate_id]
        await conn.execute(LOCK_AGGREGATE, str(aggregate_id))
        state = await conn.fetchrow(
            VERSION_AND_KEYS, aggregate_id, [e.idempotency_key for e in group]
        )
        existing = set(state["existing"])
        fresh = [e for e in group if e.idempotency_key not in existing]
        if not fresh:
            continue
        version = state["version"]
        rows = []
        for event in fresh:
            version += 1
            rows.append(
                (
                    event.workspace_id,
                    event.aggregate_type,
                    event.aggregate_id,
                    version,
                    event.event_type,
                    json.dumps(event.payload, default=str),
                    json.dumps(event.metadata, default=str),
                    event.idempotency_key,
                    event.occurred_at,
                )
            )
        await conn.executemany(INSERT_EVENT, rows)
        appended += len(rows)
    return appended
