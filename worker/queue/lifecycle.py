"""The connector's calls beyond ingestion: deletions, sync cursors, sync errors, full
syncs.

(``worker.client`` exports them with the rest.) A cursor moves with a page's jobs:
``enqueue_many(..., cursor=Cursor(...))``; :func:`read_cursor` is where a connector
(re)starts. A full sync: :func:`begin_full_sync` (or :func:`current_full_sync` to resume
one), pages with ``enqueue_many(..., full_sync=sync)``, then :func:`end_full_sync`. See
the README's "Connector lifecycle" for the loop they make.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from arq.connections import ArqRedis

from worker.core.settings import Settings, get_settings
from worker.db import sync
from worker.db.sync import Cursor, FullSync
from worker.queue.client import enqueue, enqueue_many

__all__ = [
    "Cursor",
    "FullSync",
    "begin_full_sync",
    "current_full_sync",
    "deletion_payload",
    "end_full_sync",
    "enqueue_deletion",
    "integrations",
    "read_cursor",
    "record_sync_error",
]


def deletion_payload(
    workspace_id: UUID | str,
    source: str,
    external_id: str,
    kind: str,
    deleted_at: datetime | None = None,
) -> dict[str, Any]:
    """The ``deletion`` payload of one item (``DeletionPayload``), as a connector's page
    or a full sync's cleanup sends it."""
    return {
        "kind": "deletion",
        "workspace_id": str(workspace_id),
        "source": source,
        "external_id": external_id,
        "deleted_kind": kind,
        "deleted_at": deleted_at.isoformat() if deleted_at is not None else None,
    }


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
    payload = deletion_payload(workspace_id, source, external_id, kind, deleted_at)
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


async def begin_full_sync(db: asyncpg.Pool, workspace_id: UUID | str, source: str) -> FullSync:
    """Declare a full sync of ``source``: send every item it holds now with
    ``enqueue_many(..., full_sync=sync)``, then :func:`end_full_sync`. A full sync of the
    source still running is abandoned (it deletes nothing)."""
    async with db.acquire() as conn:
        return await sync.begin_full_sync(conn, UUID(str(workspace_id)), source)


async def current_full_sync(
    db: asyncpg.Pool, workspace_id: UUID | str, source: str
) -> FullSync | None:
    """The source's full sync that began and did not end (a connector restarted mid-sync
    resumes it, from its cursor); None if there is none."""
    async with db.acquire() as conn:
        return await sync.current_full_sync(conn, UUID(str(workspace_id)), source)


async def end_full_sync(
    redis: ArqRedis,
    db: asyncpg.Pool,
    full_sync: FullSync,
    *,
    error: str | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """End ``full_sync``. With ``error`` it failed: nothing is deleted, the integration
    shows the error. Otherwise the source's stored items it did not see (and that no
    ingest recorded after it began wrote) are deleted: deletion jobs, enqueued through
    the ledger ``SYNC_CLEANUP_BATCH`` at a time. Ending again an end that was cut short
    finishes it (same deletion jobs). Returns ``{"state", "seen", "deleted"}``, which the
    ``sync.completed`` / ``sync.failed`` event also holds."""
    settings = settings or get_settings()
    if error is not None:
        async with db.acquire() as conn:
            return await sync.finish(conn, full_sync, deleted=0, error=error)
    async with db.acquire() as conn:
        deleted_at = await sync.start_ending(conn, full_sync)
    after, deleted = ("communication", ""), 0
    while True:
        async with db.acquire() as conn:
            batch = await sync.unseen(conn, full_sync, after, settings.sync_cleanup_batch)
        if not batch:
            break
        payloads = [
            deletion_payload(full_sync.workspace_id, full_sync.source, ext, kind, deleted_at)
            for kind, ext in batch
        ]
        await enqueue_many(redis, payloads, db=db, settings=settings)
        deleted += len(batch)
        after = batch[-1]
    async with db.acquire() as conn:
        return await sync.finish(conn, full_sync, deleted=deleted)
