"""A connector's sync state: its source's ``core.integrations`` row and its cursors in
``ops.sync_cursors``, written in the transaction that records a page's jobs.

Why in that transaction: "the page's jobs are recorded" and "the cursor moved past the
page" are then one fact. A connector killed anywhere either finds its cursor before the
page (the jobs were not recorded either: it sends the page again) or after it (every job
of the page is in the ledger, which the reconciler replays if Redis never got them).

A source is an integration by name: the row whose ``provider`` is the payloads'
``source`` in that workspace, made on first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from worker.db.queries import Q


@dataclass(frozen=True)
class Cursor:
    """Where a connector's ``stream`` of ``source`` in ``workspace_id`` has got to: any
    JSON value (a Gmail historyId, a Slack timestamp, a page token)."""

    workspace_id: UUID
    source: str
    stream: str
    value: Any


async def integration_id(conn: asyncpg.Connection, workspace_id: UUID, source: str) -> UUID:
    """The source's integration row, made if missing (inside the caller's transaction)."""
    row = await conn.fetchrow(Q.sync_find_integration, workspace_id, source)
    if row["id"] is not None:
        found: UUID = row["id"]
        return found
    made: UUID = await conn.fetchval(Q.sync_create_integration, workspace_id, source)
    return made


async def advance(conn: asyncpg.Connection, cursor: Cursor) -> None:
    """Move the cursor (and mark the source active and synced), in the caller's transaction."""
    iid = await integration_id(conn, cursor.workspace_id, cursor.source)
    await conn.execute(
        Q.sync_advance_cursor, cursor.workspace_id, iid, cursor.stream, json.dumps(cursor.value)
    )


async def read(conn: asyncpg.Connection, workspace_id: UUID, source: str, stream: str) -> Any:
    """The stored cursor's value; None before the first page."""
    raw = await conn.fetchval(Q.sync_read_cursor, workspace_id, source, stream)
    return None if raw is None else json.loads(raw)


async def record_error(
    conn: asyncpg.Connection, workspace_id: UUID, source: str, error: str
) -> None:
    """The source's sync failed: its integration shows ``error`` until a cursor moves."""
    async with conn.transaction():
        iid = await integration_id(conn, workspace_id, source)
        await conn.execute(Q.sync_record_error, workspace_id, iid, error[:2000])


async def integrations(conn: asyncpg.Connection, workspace_id: UUID) -> list[dict[str, Any]]:
    """Each source's status, last successful sync, last error and cursors."""
    rows = await conn.fetch(Q.sync_integrations, workspace_id)
    return [{**dict(r), "cursors": json.loads(r["cursors"])} for r in rows]
