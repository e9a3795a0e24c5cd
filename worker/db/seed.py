"""Rows the demo puts in place before it ingests: its workspace and one insight.

Idempotent, so a second ``cos-worker demo`` on the same data directory adds (and
embeds) nothing again.
"""

from __future__ import annotations

from uuid import UUID

import asyncpg

from worker.db.queries import Q


async def seed_workspace(conn: asyncpg.Connection, workspace_id: UUID, name: str) -> None:
    """The workspace, unless it exists already."""
    await conn.execute(Q.seed_workspace, workspace_id, name)


async def seed_insight(
    conn: asyncpg.Connection, workspace_id: UUID, insight_type: str, title: str, body: str
) -> None:
    """One insight, unless the workspace already has one with this title."""
    await conn.execute(Q.seed_insight, workspace_id, insight_type, title, body)
