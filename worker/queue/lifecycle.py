"""The connector's calls beyond ingestion: deletions, sync cursors, sync errors.

(``worker.client`` exports them with the rest.) A cursor moves with a page's jobs:
``enqueue_many(..., cursor=Cursor(...))``; :func:`read_cursor` is where a connector
(re)starts. See the README's "Connector lifecycle" for the loop they make.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from arq.connections import ArqRedis

from worker.db import sync
from worker.db.sync import Cursor
from worker.queue.client import enqueue

__all__ = ["Cursor", "enqueue_deletion", "integrations", "read_cursor", "record_sync_error"]


async def enqueue_deletion(
    redis: ArqRedis,
    workspace_id: UUID | str,
    source: str,
    external_id: str,
    kind: str,
    *,
    deleted_at: datetime | None = None,
    **kw: Any,
) -> str:
    """An item deleted upstream: its rows, chunks and vectors go (``DeletionPayload``:
    ``kind`` is the deleted item's, e.g. ``communication`` or ``email``). Idempotent:
    deleting an unknown or already deleted item is recorded and harms nothing. Takes
    ``db``/``settings`` as ``enqueue``; pages of deletions (with a cursor) go through
    ``enqueue_many`` as payloads of kind ``deletion``."""
    payload = {
        "kind": "deletion",
        "workspace_id": str(workspace_id),
        "source": source,
        "external_id": external_id,
        "deleted_kind": kind,
        "deleted_at": deleted_at.isoformat() if deleted_at is not None else None,
    }
    return await enqueue(redis, payload, **kw)


async def read_cursor(db: asyncpg.Pool, workspace_id: UUID | str, source: str, stream: str) -> Any:
    """Where ``stream`` of ``source`` got to (the value of the last page's cursor that
    committed); None before its first page."""
    async with db.acquire() as conn:
        return await sync.read(conn, UUID(str(workspace_id)), source, stream)


async def record_sync_error(
    db: asyncpg.Pool, workspace_id: UUID | str, source: str, error: str
) -> None:
    """The connector's sync of ``source`` failed: ``core.integrations`` shows ``error``
    (status ``error``) until a page's cursor moves again. Say what failed, not what the
    content was: the row is read by operators."""
    async with db.acquire() as conn:
        await sync.record_error(conn, UUID(str(workspace_id)), source, error)


async def integrations(db: asyncpg.Pool, workspace_id: UUID | str) -> list[dict[str, Any]]:
    """Each source of the workspace: status, last successful sync, last error, cursors."""
    async with db.acquire() as conn:
        return await sync.integrations(conn, UUID(str(workspace_id)))
