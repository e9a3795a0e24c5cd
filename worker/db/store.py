"""The store stage: one item's rows, inside the caller's transaction.

Each kind is written in two steps, so its caller (``worker.ingest.write``) can record the
ledger between them: ``write_*`` the item's own rows (its source row upserted on the
natural key (workspace, source, external_id); its chunks replaced wholesale by delete +
binary COPY, so a re-ingest never leaves a mix of old and new), then ``share_*`` the rows
other items share (contacts, participants, thread counters; ``worker.db.people``), last,
so their locks are held for the few statements before the commit. Nothing here commits
and nothing here writes the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np
from pgvector import Vector

from worker.core.payloads import CommunicationPayload, MediaPayload, TranscriptPayload
from worker.db.people import (
    comm_parts,
    comm_people,
    named_addresses,
    refresh_threads,
    replace_meeting_participants,
    upsert_contacts,
)
from worker.db.queries import CHUNK_TABLES, SOURCE_TABLES, Q
from worker.text.chunking import Chunk

# Chunk rows' columns: the parent ids, the kind's own, then what every chunk row has.
_CHUNK_TAIL = ("content", "content_hash", "token_count", "embedding", "embedding_model")
CHUNK_COLUMNS = {
    "transcript": ("workspace_id", "transcript_id", "meeting_id", "chunk_index", "speaker")
    + ("speakers", "start_ms", "end_ms", *_CHUNK_TAIL),
    "media": ("workspace_id", "asset_id", "chunk_index", "start_ms", "end_ms", "metadata")
    + _CHUNK_TAIL,
}


@dataclass(frozen=True)
class StoreResult:
    """What an item wrote: the source row id and row counts, for events and logs."""

    source_id: UUID
    chunks: int
    contacts: int
    participants: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "source_id": str(self.source_id),
            "chunks": self.chunks,
            "contacts": self.contacts,
            "participants": self.participants,
        }


@dataclass(frozen=True)
class Written:
    """An item's own rows, and what its shared rows need next."""

    result: StoreResult
    created: bool = True  # the source row is new (no participants to replace)
    thread_id: UUID | None = None
    old_thread_id: UUID | None = None  # a moved message leaves a count behind
    meeting_id: UUID | None = None
    attached: dict[str, int] | None = None  # a message's attachments: rows, assets, chunks

    def as_dict(self) -> dict[str, Any]:
        out = self.result.as_dict()
        return {**out, "attachments": self.attached} if self.attached is not None else out


def item_lock_key(kind: str, workspace_id: UUID, source: str, external_id: str) -> str:
    """Key of the advisory lock that serializes the final transactions of one item
    (taken with the ledger row lock by ``ledger.claim``)."""
    return f"{kind}|{workspace_id}|{source}|{external_id}"


async def newer_version_stored(
    conn: asyncpg.Connection,
    kind: str,
    workspace_id: UUID,
    source: str,
    external_id: str,
    queued_at: datetime,
) -> bool:
    """True when the stored row came from a job queued after this one, or the item was
    deleted by a job queued after this one (we are stale).

    The caller holds the item's lock (``item_lock_key``), taken by an earlier statement,
    so two versions of one item finishing at once cannot both pass this check and let
    the older overwrite the newer.
    """
    sql = Q.current_source_job.format(table=SOURCE_TABLES[kind])
    stored_at = await conn.fetchval(sql, workspace_id, source, external_id, kind)
    return stored_at is not None and stored_at > queued_at


def _position(chunk: Chunk) -> str:
    """A media chunk's ``metadata``: where it is in its document (migration 004)."""
    return json.dumps({"position": chunk.position}) if chunk.position else "{}"


# The columns between a chunk row's parent ids and its text, per kind (CHUNK_COLUMNS).
_CHUNK_FIELDS: dict[str, Callable[[Chunk], tuple[Any, ...]]] = {
    "transcript": lambda c: (c.index, c.speaker, list(c.speakers), c.start_ms, c.end_ms),
    "media": lambda c: (c.index, c.start_ms, c.end_ms, _position(c)),
}


def chunk_records(
    kind: str, lead: tuple[Any, ...], chunks: Sequence[Chunk], vectors: np.ndarray, model: str
) -> list[tuple[Any, ...]]:
    """Rows for ``copy_chunks``: ``lead`` (the parent ids) then each chunk's columns, row
    i of ``vectors`` for ``chunks[i]`` (no copies)."""
    fields = _CHUNK_FIELDS[kind]
    return [
        (*lead, *fields(c), c.text, c.content_hash, c.token_count, vectors[i], model)
        for i, c in enumerate(chunks)
    ]


async def copy_chunks(conn: asyncpg.Connection, kind: str, records: list[tuple[Any, ...]]) -> None:
    """Binary COPY of chunk rows (vectors travel in pgvector's binary format)."""
    if not records:
        return
    schema, table = CHUNK_TABLES[kind].split(".")
    await conn.copy_records_to_table(
        table, schema_name=schema, columns=list(CHUNK_COLUMNS[kind]), records=records
    )


def comm_result(
    comm_id: UUID, payload: CommunicationPayload, chunks: Sequence[Chunk]
) -> StoreResult:
    """What a stored communication reports: its row, chunks, contacts and participants."""
    return StoreResult(
        comm_id, len(chunks), len(named_addresses(comm_people(payload))), len(comm_parts(payload))
    )


#: A body longer than this (characters) is written by a statement of its own.
LARGE_BODY_CHARS = 1 << 20


def bodies_for_upsert(bodies: Sequence[str]) -> list[str]:
    """The ``body`` array of ``upsert_communications``: a large body is left empty there
    and written by :func:`write_large_bodies` right after, in the same transaction.

    Why: asyncpg encodes an array parameter element by element into buffers that are
    copied into the message: a 20 MB body was five more copies of itself in the worker
    at once (~88 MB, measured with memray); as a plain text parameter it is one."""
    return [b if len(b) <= LARGE_BODY_CHARS else "" for b in bodies]


async def write_large_bodies(
    conn: asyncpg.Connection, ids: Sequence[UUID], bodies: Sequence[str]
) -> None:
    """Each large body :func:`bodies_for_upsert` left out, into its row."""
    for comm_id, body in zip(ids, bodies, strict=True):
        if len(body) > LARGE_BODY_CHARS:
            await conn.execute(Q.set_communication_body, comm_id, body)


async def write_communication(
    conn: asyncpg.Connection,
    job_id: UUID,
    payload: CommunicationPayload,
    body: str,
    content_hash: str,
    vector: np.ndarray | None,
    model: str | None,
    chunks: Sequence[Chunk],
) -> Written:
    """Upsert a communication (one vector: None when it has no text) in its thread."""
    ws = payload.workspace_id
    thread_id = None
    if payload.thread_key:
        thread_id = await conn.fetchval(
            Q.ensure_thread,
            ws,
            payload.source,
            payload.thread_key,
            payload.subject,
            payload.channel,
        ) or await conn.fetchval(Q.find_thread, ws, payload.source, payload.thread_key)
    sender = payload.sender
    row = await conn.fetchrow(
        Q.upsert_communications,
        [ws],
        [thread_id],
        [payload.source],
        [payload.external_id],
        [payload.channel],
        [payload.subject],
        [sender.name if sender else None],
        [sender.address if sender else None],
        bodies_for_upsert([body]),
        [content_hash],
        [payload.sent_at],
        [json.dumps(payload.metadata)],
        [sum(c.token_count for c in chunks)],
        [len(chunks)],
        [Vector(vector) if vector is not None else None],
        [model],
        [job_id],
    )
    await write_large_bodies(conn, [row["id"]], [body])
    result = comm_result(row["id"], payload, chunks)
    return Written(result, bool(row["created"]), thread_id, row["old_thread_id"])


async def share_communication(
    conn: asyncpg.Connection, payload: CommunicationPayload, written: Written
) -> None:
    """The communication's contacts (sorted: one lock order for all), participants, and
    its thread's counters (a message moved from another thread leaves that one's too)."""
    ws, comm_id = payload.workspace_id, written.result.source_id
    contacts = await upsert_contacts(conn, ws, comm_people(payload), payload.sent_at)
    if not written.created:
        await conn.execute(Q.delete_comm_participants, [ws], [comm_id])
    if parts := comm_parts(payload):
        await conn.execute(
            Q.insert_comm_participants,
            [ws] * len(parts),
            [comm_id] * len(parts),
            [contacts.get(a) if a else None for a, _, _ in parts],
            [r for _, r, _ in parts],
            [n for _, _, n in parts],
            [a for a, _, _ in parts],
        )
    threads: dict[tuple[UUID, UUID], str | None] = {}
    if written.old_thread_id is not None:
        threads[(ws, written.old_thread_id)] = None
    if written.thread_id is not None:
        threads[(ws, written.thread_id)] = payload.subject
    await refresh_threads(conn, threads)


async def upsert_meeting(conn: asyncpg.Connection, payload: TranscriptPayload) -> UUID:
    m = payload.meeting
    meeting_id: UUID = await conn.fetchval(
        Q.upsert_meeting,
        payload.workspace_id,
        payload.source,
        payload.external_id,
        m.title,
        m.starts_at,
        m.ends_at,
        json.dumps(payload.metadata),
    )
    return meeting_id


async def upsert_transcript(
    conn: asyncpg.Connection,
    job_id: UUID,
    payload: TranscriptPayload,
    meeting_id: UUID | None,
    content_hash: str,
    fmt: str,
    chunks: int,
    max_end_ms: int | None,
) -> UUID:
    transcript_id: UUID = await conn.fetchval(
        Q.upsert_transcript,
        payload.workspace_id,
        meeting_id,
        payload.source,
        payload.external_id,
        payload.language,
        fmt,
        content_hash,
        chunks,
        max_end_ms,
        job_id,
    )
    return transcript_id


async def write_transcript(
    conn: asyncpg.Connection,
    job_id: UUID,
    payload: TranscriptPayload,
    content_hash: str,
    fmt: str,
    chunks: Sequence[Chunk],
    vectors: np.ndarray,
    model: str,
) -> Written:
    """Upsert the meeting and transcript and replace its chunks."""
    ws = payload.workspace_id
    meeting_id = await upsert_meeting(conn, payload)
    ends = [c.end_ms for c in chunks if c.end_ms is not None]
    max_end = max(ends) if ends else None
    transcript_id = await upsert_transcript(
        conn, job_id, payload, meeting_id, content_hash, fmt, len(chunks), max_end
    )
    await conn.execute(Q.delete_transcript_chunks, ws, transcript_id)
    lead = (ws, transcript_id, meeting_id)
    await copy_chunks(conn, "transcript", chunk_records("transcript", lead, chunks, vectors, model))
    people = payload.participants
    result = StoreResult(transcript_id, len(chunks), len(named_addresses(people)), len(people))
    return Written(result, meeting_id=meeting_id)


async def share_transcript(
    conn: asyncpg.Connection, payload: TranscriptPayload, meeting_id: UUID
) -> int:
    """The meeting's contacts and participants (after the long COPY); how many contacts."""
    ws, people = payload.workspace_id, payload.participants
    contacts = await upsert_contacts(conn, ws, people, payload.meeting.starts_at)
    await replace_meeting_participants(conn, ws, meeting_id, people, contacts)
    return len(contacts)


async def upsert_asset(
    conn: asyncpg.Connection,
    job_id: UUID,
    payload: MediaPayload,
    content_hash: str,
    document: dict[str, Any] | None = None,
) -> UUID:
    """The asset row; ``document``: what reading it as a document found (type, status,
    pages...), kept in its metadata, its sniffed type standing in for a missing mime."""
    a = payload.asset
    metadata = {**payload.metadata, "document": document} if document else payload.metadata
    mime_type = a.mime_type or (document or {}).get("mime_type")
    asset_id: UUID = await conn.fetchval(
        Q.upsert_asset,
        payload.workspace_id,
        payload.source,
        payload.external_id,
        a.kind,
        a.title,
        mime_type,
        a.duration_ms,
        a.uri,
        content_hash,
        json.dumps(metadata),
        job_id,
    )
    return asset_id


async def write_media(
    conn: asyncpg.Connection,
    job_id: UUID,
    payload: MediaPayload,
    content_hash: str,
    chunks: Sequence[Chunk],
    vectors: np.ndarray,
    model: str,
    document: dict[str, Any] | None = None,
) -> Written:
    """Upsert the asset and replace its chunks (media shares no rows with other items)."""
    ws = payload.workspace_id
    asset_id = await upsert_asset(conn, job_id, payload, content_hash, document)
    await conn.execute(Q.delete_media_chunks, ws, asset_id)
    await copy_chunks(conn, "media", chunk_records("media", (ws, asset_id), chunks, vectors, model))
    return Written(StoreResult(asset_id, len(chunks), 0, 0))
