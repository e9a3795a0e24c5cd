"""The event a connector's full sync leaves in the event store (``worker.db.sync``): one
``sync.completed`` or ``sync.failed`` per sync, with counts only (here because only this
package writes ``ops.events``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from worker.db.ledger.events import NewEvent, append_events

SYNC_COMPLETED = "sync.completed"
SYNC_FAILED = "sync.failed"
FULL_SYNC = "full_sync"  # the aggregate type: aggregate_id is the sync's id


async def record_sync_end(
    conn: asyncpg.Connection,
    workspace_id: UUID,
    sync_id: UUID,
    event_type: str,
    counts: Mapping[str, Any],
) -> None:
    """Append the sync's end (inside the caller's transaction); recorded once per sync."""
    event = NewEvent(
        aggregate_id=sync_id,
        event_type=event_type,
        idempotency_key=f"{FULL_SYNC}:{sync_id}:end",
        aggregate_type=FULL_SYNC,
        workspace_id=workspace_id,
        payload=dict(counts),
        occurred_at=datetime.now(UTC),
    )
    await append_events(conn, [event])
