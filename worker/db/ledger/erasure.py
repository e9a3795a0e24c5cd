"""The ledger's part of an erasure (``worker.db.erase``): the scope's ledger rows go
(external ids, payloads and errors with them), and the event store, which keeps its
history, gets one ``scope.erased`` event holding counts only.

Here because only this package writes ``ops.ingestion_jobs`` and ``ops.events``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import asyncpg

from worker.db.queries import Q

SCOPE_ERASED = "scope.erased"
_SCOPE_NAMESPACE = uuid.UUID("3b1f7c2e-9a4d-5e6f-8b7a-1c2d3e4f5a6b")


def scope_aggregate(workspace_id: UUID, source: str | None) -> UUID:
    """The erasure aggregate of a scope: its runs are one gap-free stream of versions."""
    return uuid.uuid5(_SCOPE_NAMESPACE, f"{workspace_id}:{source or ''}")


async def delete_rows(
    conn: asyncpg.Connection, workspace_id: UUID, source: str | None, limit: int
) -> list[tuple[UUID, str | None]]:
    """One batch of the scope's ledger rows (its own transaction); (job id, arq id) of each
    row deleted, so their Redis results can go too."""
    rows = await conn.fetch(Q.erase_ledger_rows, workspace_id, source, limit)
    return [(r["id"], r["arq_job_id"]) for r in rows]


async def record_erasure(
    conn: asyncpg.Connection,
    workspace_id: UUID,
    source: str | None,
    counts: Mapping[str, Any],
) -> UUID:
    """Append ``scope.erased`` with ``counts`` (numbers and table names only); returns the
    event's idempotency key's run id. Each completed run is its own fact."""
    run = uuid.uuid4()
    aggregate = scope_aggregate(workspace_id, source)
    key = f"erasure:{aggregate}:{run}"
    async with conn.transaction():
        await conn.execute(
            Q.erase_append_event, workspace_id, aggregate, json.dumps(dict(counts)), key
        )
    return run
