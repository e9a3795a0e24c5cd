"""The store stage for a streamed (large) item: its rows written window by window.

A large transcript or media item is written inside its one transaction: ``open_*``
upserts the source row, stages the item's current vectors for reuse and deletes its old
chunks; ``copy_window`` writes one window; ``close_*`` finishes the source row. Nothing
commits here either: a failure anywhere rolls the item back whole. (Short items are
written at once by ``store.py``; the ledger is recorded by the stream write path, ``worker.ingest.write``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np

from worker.core.payloads import MediaPayload, TranscriptPayload
from worker.db import reuse, store
from worker.db.people import named_addresses
from worker.db.queries import CHUNK_TABLES, Q
from worker.text.chunking import Chunk

_PARENT_COLUMN = {"transcript": "transcript_id", "media": "asset_id"}


@dataclass
class ChunkTarget:
    """Where a streamed item's chunks go, and what has been written so far."""

    kind: str
    workspace_id: UUID
    source_id: UUID
    lead: tuple[Any, ...]  # leading column values of every chunk row
    meeting_id: UUID | None = None
    staged: bool = False  # the item's previous vectors are in the temp table item_vectors
    chunks: int = 0
    max_end_ms: int | None = None
    windows: int = 0


async def _stage_and_delete(conn: asyncpg.Connection, target: ChunkTarget, model: str) -> None:
    table = CHUNK_TABLES[target.kind]
    parent = _PARENT_COLUMN[target.kind]
    await conn.execute(Q.stage_item_vectors.format(table=table))
    status = await conn.execute(
        Q.fill_item_vectors.format(table=table, parent=parent),
        target.workspace_id,
        target.source_id,
        model,
    )
    target.staged = not status.endswith(" 0")
    if target.staged:
        await conn.execute(Q.index_item_vectors)
    delete = Q.delete_transcript_chunks if target.kind == "transcript" else Q.delete_media_chunks
    await conn.execute(delete, target.workspace_id, target.source_id)


async def open_transcript(
    conn: asyncpg.Connection,
    job_id: UUID,
    payload: TranscriptPayload,
    content_hash: str,
    fmt: str,
    model: str,
) -> ChunkTarget:
    ws = payload.workspace_id
    meeting_id = await store.upsert_meeting(conn, payload)
    # Counts are not known yet: close_transcript sets them (same row, same transaction).
    transcript_id = await store.upsert_transcript(
        conn, job_id, payload, meeting_id, content_hash, fmt, 0, None
    )
    target = ChunkTarget(
        "transcript", ws, transcript_id, (ws, transcript_id, meeting_id), meeting_id=meeting_id
    )
    await _stage_and_delete(conn, target, model)
    return target


async def open_media(
    conn: asyncpg.Connection,
    job_id: UUID,
    payload: MediaPayload,
    content_hash: str,
    model: str,
    document: dict[str, Any] | None = None,
) -> ChunkTarget:
    ws = payload.workspace_id
    asset_id = await store.upsert_asset(conn, job_id, payload, content_hash, document)
    target = ChunkTarget("media", ws, asset_id, (ws, asset_id))
    await _stage_and_delete(conn, target, model)
    return target


async def window_vectors(
    conn: asyncpg.Connection, target: ChunkTarget, model: str, hashes: Sequence[str]
) -> dict[str, np.ndarray]:
    """Reusable vectors for one window: the workspace's (incl. this item's windows written
    so far) and, on a re-ingest, the item's previous ones staged before the delete."""
    if not target.staged:
        return await reuse.reusable_chunk_vectors(
            conn, target.kind, target.workspace_id, model, hashes
        )
    sql = Q.reuse_chunk_embeddings_staged.format(table=CHUNK_TABLES[target.kind])
    rows = await conn.fetch(sql, target.workspace_id, model, list(set(hashes)))
    return {r["content_hash"]: r["embedding"].to_numpy() for r in rows}


async def copy_window(
    conn: asyncpg.Connection,
    target: ChunkTarget,
    chunks: Sequence[Chunk],
    vectors: np.ndarray,
    model: str,
) -> None:
    """COPY one window of chunk rows (row i of ``vectors`` for ``chunks[i]``, no copies)."""
    records = store.chunk_records(target.kind, target.lead, chunks, vectors, model)
    await store.copy_chunks(conn, target.kind, records)
    target.chunks += len(chunks)
    target.windows += 1
    ends = [c.end_ms for c in chunks if c.end_ms is not None]
    if ends:
        last = max(ends)
        target.max_end_ms = last if target.max_end_ms is None else max(last, target.max_end_ms)


async def close_transcript(
    conn: asyncpg.Connection,
    job_id: UUID,
    payload: TranscriptPayload,
    content_hash: str,
    fmt: str,
    target: ChunkTarget,
) -> store.Written:
    """The transcript row's counts, now that every window is written; the meeting's
    contacts and participants follow (``store.share_transcript``) once the ledger is."""
    await store.upsert_transcript(
        conn,
        job_id,
        payload,
        target.meeting_id,
        content_hash,
        fmt,
        target.chunks,
        target.max_end_ms,
    )
    people = payload.participants
    contacts = len(named_addresses(people))
    result = store.StoreResult(target.source_id, target.chunks, contacts, len(people))
    return store.Written(result, meeting_id=target.meeting_id)


def close_media(target: ChunkTarget) -> store.Written:
    return store.Written(store.StoreResult(target.source_id, target.chunks, 0, 0))
