"""Appending to the event store (``ops.events``).

The event store is append-only (the database refuses UPDATE and DELETE). Each
aggregate has a gap-free version sequence; appends for one aggregate are serialized
with a transaction-scoped advisory lock so two workers cannot race for a version,
and every event carries an idempotency key so a retried step appends nothing twice.
Call inside the transaction that makes the state change the events describe.

Since nothing appended can be erased, an ingestion job's event is cut to what the event
contract allows (``contract.clean``: ids and counts, no personal content) here, on the
one way into the store, whoever built it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from worker.db.ledger import contract
from worker.db.queries import Q

INGESTION_JOB = "ingestion_job"


@dataclass(frozen=True)
class NewEvent:
    """An event about to be appended; the version is assigned at append time."""

    aggregate_id: UUID
    event_type: str
    idempotency_key: str
    aggregate_type: str = INGESTION_JOB
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
        await conn.execute(Q.events_lock_aggregates, list({e.aggregate_id for e in events}))
    status = await conn.execute(
        Q.events_insert,
        [e.aggregate_id for e in events],
        [e.workspace_id for e in events],
        [e.aggregate_type for e in events],
        [e.event_type for e in events],
        [json.dumps(_payload(e), default=str) for e in events],
        [json.dumps(_metadata(e), default=str) for e in events],
        [e.idempotency_key for e in events],
        [e.occurred_at for e in events],
    )
    return int(status.rsplit(" ", 1)[1])  # "INSERT 0 <n>"


def _payload(event: NewEvent) -> dict[str, Any]:
    if event.aggregate_type != INGESTION_JOB:
        return event.payload  # maintenance runs, erasures: built from counts and names
    return contract.clean(event.event_type, event.payload)


def _metadata(event: NewEvent) -> dict[str, Any]:
    if event.aggregate_type != INGESTION_JOB:
        return event.metadata
    return contract.clean_metadata(event.metadata)
