"""The store stage for a message's attachments: ``comms.attachments`` rows, and for each
attachment that is a document with text, a ``media.assets`` row with its chunks
(``media.media_chunks``, position in ``metadata``) linked to the message
(``media.asset_links``).

An attachment's asset is keyed by the file's bytes (external id ``attachment:sha256:...``
under the message's source): the same PDF attached again down a thread is one asset,
stored and embedded once, linked to every message that carried it. A message's
attachment rows and links are replaced wholesale on re-ingest, like chunks. Runs inside
the message's transaction (``worker.ingest.write``); nothing here commits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np

from worker.db.queries import Q
from worker.db.store import chunk_records, copy_chunks
from worker.text.chunking import Chunk


@dataclass(frozen=True)
class DocumentRows:
    """An attachment's document text, chunked and embedded: its asset and chunk rows."""

    sha256: str
    title: str | None
    mime_type: str
    metadata: dict[str, Any]  # {"document": {type, status, reason, pages, chars}}
    chunks: Sequence[Chunk]
    vectors: np.ndarray
    model: str | None

    @property
    def external_id(self) -> str:
        return f"attachment:sha256:{self.sha256}"


@dataclass(frozen=True)
class AttachmentRows:
    """One attachment as stored: always a ``comms.attachments`` row; a document with text
    also an asset (``document``)."""

    filename: str | None
    mime_type: str
    size_bytes: int
    document: DocumentRows | None = None


@dataclass
class AttachmentsWritten:
    attachments: int = 0
    assets: int = 0  # assets written (new or changed)
    linked: int = 0  # assets linked to the message (written or already stored)
    chunks: int = 0
    asset_ids: list[UUID] = field(default_factory=list)


async def _document_asset(
    conn: asyncpg.Connection, job_id: UUID, ws: UUID, source: str, doc: DocumentRows
) -> tuple[UUID, bool]:
    """The document's asset id, and whether it was written (False: already stored)."""
    row = await conn.fetchrow(Q.asset_hash, ws, source, doc.external_id)
    if row is not None and row["content_hash"] == doc.sha256:
        return row["id"], False
    asset_id: UUID = await conn.fetchval(
        Q.upsert_asset,
        ws,
        source,
        doc.external_id,
        "document",
        doc.title,
        doc.mime_type,
        None,
        None,
        doc.sha256,
        json.dumps(doc.metadata),
        job_id,
    )
    await conn.execute(Q.delete_media_chunks, ws, asset_id)
    if doc.chunks and doc.model is not None:
        records = chunk_records("media", (ws, asset_id), doc.chunks, doc.vectors, doc.model)
        await copy_chunks(conn, "media", records)
    return asset_id, True


async def write_attachments(
    conn: asyncpg.Connection,
    job_id: UUID,
    ws: UUID,
    source: str,
    communication_id: UUID,
    attachments: Sequence[AttachmentRows],
) -> AttachmentsWritten:
    """Replace the message's attachment rows and asset links; write new documents."""
    out = AttachmentsWritten(attachments=len(attachments))
    assets: dict[str, UUID] = {}
    # In key order: two messages sharing attachments lock their assets in the same order.
    docs = sorted({a.document.sha256: a.document for a in attachments if a.document}.items())
    for sha, doc in docs:
        asset_id, written = await _document_asset(conn, job_id, ws, source, doc)
        assets[sha] = asset_id
        if written:
            out.assets += 1
            out.chunks += len(doc.chunks)
    await conn.execute(
        Q.replace_attachments,
        ws,
        communication_id,
        [a.filename for a in attachments],
        [a.mime_type for a in attachments],
        [a.size_bytes for a in attachments],
        [assets[a.document.sha256] if a.document else None for a in attachments],
    )
    out.asset_ids = list(assets.values())
    await conn.execute(Q.link_message_assets, ws, communication_id, out.asset_ids)
    out.linked = len(out.asset_ids)
    return out
