"""Read-only figures for people: what a workspace holds (the demo's report) and where
the ledger stands (``cos-worker status``).

Here so the CLI and the demo print database figures without running SQL themselves
(only ``worker/db/`` and ``worker/maintenance/`` run named queries).
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from worker.db.queries import Q


async def workspace_counts(
    db: asyncpg.Pool | asyncpg.Connection, workspace_id: UUID
) -> dict[str, int]:
    """Rows of each kind written in the workspace, named as the demo prints them
    (``"communications"``, ``"contacts embedded"``, ``"jobs done"``, ...), in its order."""
    row = await db.fetchrow(Q.workspace_counts, workspace_id)
    return {name: int(value) for name, value in row.items()}


async def embedded_tokens(db: asyncpg.Pool | asyncpg.Connection, workspace_id: UUID) -> int:
    """Tokens embedded for the workspace so far, from its ``content.embedded`` events."""
    return int(await db.fetchval(Q.embedded_tokens, workspace_id))


async def ledger_status(conn: asyncpg.Connection) -> tuple[dict[str, int], datetime | None]:
    """Jobs by status, and when the oldest still-queued job was queued (None: none is)."""
    counts = {r["status"]: r["n"] for r in await conn.fetch(Q.ledger_counts)}
    oldest: datetime | None = await conn.fetchval(Q.oldest_queued)
    return counts, oldest


async def queued_by_workspace(
    conn: asyncpg.Connection, limit: int = 20
) -> list[tuple[UUID | None, int, datetime]]:
    """Per workspace (the longest waiting first): queued jobs and when the oldest was
    queued. A rejected payload's row has no workspace (None)."""
    rows = await conn.fetch(Q.oldest_queued_by_workspace, limit)
    return [(r["workspace_id"], int(r["queued"]), r["oldest"]) for r in rows]
