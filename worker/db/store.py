"""The store stage: writes one item's rows inside the caller's transaction.

Source rows are upserted on their natural key (workspace, source, external_id);
chunk rows are replaced wholesale (delete + binary COPY), so a re-ingest never leaves
a mix of old and new chunks. Contacts are upserted by address in sorted order, so
concurrent jobs touching the same people take row locks in the same order and cannot
deadlock. Nothing here commits: the pipeline owns the transaction.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np
from pgvector import Vector

from worker.core.payloads import CommunicationPayload, MediaPayload, Person, TranscriptPayload
from worker.db.queries import CHUNK_TABLES, SOURCE_TABLES, Q
from worker.text.chunking import Chunk

CHUNK_COLUMNS = {
    "transcript": (
        "workspace_id",
        "transcript_id",
        "meeting_id",
        "chunk_index",
        "speaker",
        "speakers",
        "start_ms",
        "end_ms",
        "content",
        "content_hash",
        "token_count",
        "embedding",
        "embedding_model",
    ),
    "media": (
        "workspace_id",
        "asset_id",
        "chunk_index",
        "start_ms",
        "end_ms",
        "content",
        "content_hash",
        "token_count",
        "embedding",
        "embedding_model",
    ),
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


def _split(table: str) -> tuple[str, str]:
    schema, name = table.split(".")
    return schema, name


def item_lock_key(kind: str, workspace_id: UUID, source: str, external_id: str) -> str:
    """Key of the advisory lock that serializes the final transactions of one item
    (taken with the ledger row lock by ``ledger.lock_unfinished(item_lock=...)``)."""
    return f"{kind}|{workspace_id}|{source}|{external_id}"


async def newer_version_stored(
    conn: asyncpg.Connection,
    kind: str,
    workspace_id: UUID,
    source: str,
    external_id: str,
    queued_at: datetime,
) -> bool:
    """True when the stored row came from a job queued after this one (we are stale).

    The caller holds the item's lock (``item_lock_key``), taken by an earlier statement,
    so two versions of one item finishing at once cannot both pass this check and let
    the older overwrite the newer.
    """
    sql = Q.current_source_job.format(table=SOURCE_TABLES[kind])
    stored_at = await conn.fetchval(sql, workspace_id, source, external_id)
    return stored_at is not None and stored_at > queued_at


async def reusable_chunk_vectors(
    conn: asyncpg.Connection, kind: str, workspace_id: UUID, model: str, hashes: Sequence[str]
) -> dict[str, np.ndarray]:
    """Vectors this workspace already has for these chunk texts with this model."""
    if not hashes:
        return {}
    sql = Q.reuse_chunk_embeddings.format(table=CHUNK_TABLES[kind])
    rows = await conn.fetch(sql, workspace_id, model, list(set(hashes)))
    return {r["content_hash"]: r["embedding"].to_numpy() for r in rows}


async def reusable_comm_vector(
    conn: asyncpg.Connection, workspace_id: UUID, model: str, content_hash: str
) -> np.ndarray | None:
    value = await conn.fetchval(Q.reuse_comm_embedding, workspace_id, model, content_hash)
    return None if value is None else value.to_numpy()


async def reusable_comm_vectors(
    conn: asyncpg.Connection, keys: Sequence[tuple[UUID, str]], model: str
) -> list[np.ndarray | None]:
    """``reusable_comm_vector`` for many (workspace, content hash) pairs, one statement."""
    rows = await conn.fetch(
        Q.reuse_comm_embeddings, [k[0] for k in keys], [k[1] for k in keys], model
    )
    found = {r["i"]: r["embedding"] for r in rows}
    return [None if found.get(i + 1) is None else found[i + 1].to_numpy() for i in range(len(keys))]


def _names(people: Sequence[Person]) -> dict[str, str | None]:
    """``{address: display name}`` of the people who have an address (first name wins)."""
    names: dict[str, str | None] = {}
    for person in people:
        if person.address and (person.address not in names or names[person.address] is None):
            names[person.address] = person.name
    return names


async def upsert_contacts(
    conn: asyncpg.Connection, workspace_id: UUID, people: Sequence[Person], seen_at: datetime | None
) -> dict[str, UUID]:
    """Upsert people as contacts; returns ``{address: contact_id}``.

    Contacts whose row already covers this sighting are read without a lock (see the
    query): on a mailbox the owner is on every message, and locking that row would
    queue every item's final transaction behind the one before it."""
    names = _names(people)
    if not names:
        return {}
    addresses = sorted(names)
    at = seen_at or datetime.now(UTC)  # an undated sighting is seen now
    rows = await conn.fetch(
        Q.upsert_contacts,
        [workspace_id] * len(addresses),
        addresses,
        [names[a] for a in addresses],
        [at] * len(addresses),
        [at] * len(addresses),
    )
    return {r["primary_address"]: r["id"] for r in rows}


async def copy_chunks(conn: asyncpg.Connection, kind: str, records: list[tuple[Any, ...]]) -> None:
    """Binary COPY of chunk rows (vectors travel in pgvector's binary format)."""
    if not records:
        return
    schema, table = _split(CHUNK_TABLES[kind])
    await conn.copy_records_to_table(
        table, schema_name=schema, columns=list(CHUNK_COLUMNS[kind]), records=records
    )


Record = Callable[[StoreResult], Awaitable[None]]


def comm_people(payload: CommunicationPayload) -> list[Person]:
    """Everyone a communication names: its recipients, then its sender."""
    people: list[Person] = list(payload.recipients)
    if payload.sender is not None:
        people.append(payload.sender)
    return people


def comm_result(
    comm_id: UUID, payload: CommunicationPayload, chunks: Sequence[Chunk]
) -> StoreResult:
    """What a stored communication reports: its row, chunks, contacts and participants."""
    return StoreResult(
        comm_id, len(chunks), len(_names(comm_people(payload))), len(comm_parts(payload))
    )


def comm_parts(payload: CommunicationPayload) -> list[tuple[str | None, str, str | None]]:
    """A communication's participant rows, (address, role, name), the sender first."""
    parts: list[tuple[str | None, str, str | None]] = []
    if payload.sender is not None:
        parts.append((payload.sender.address, "from", payload.sender.name))
    return parts + [(r.address, r.role, r.name) for r in payload.recipients]


async def refresh_threads(
    conn: asyncpg.Connection, threads: dict[tuple[UUID, UUID], str | None]
) -> None:
    """Recount ``{(workspace, thread): subject}``, locked in id order first (lock_threads)."""
    if not threads:
        return
    keys = sorted(threads, key=lambda k: k[1])
    await conn.execute(Q.lock_threads, [k[1] for k in keys])
    await conn.execute(
        Q.refresh_threads, [k[0] for k in keys], [k[1] for k in keys], [threads[k] for k in keys]
    )


async def store_communication(
    conn: asyncpg.Connection,
    job_id: UUID,
    payload: CommunicationPayload,
    body: str,
    content_hash: str,
    vector: np.ndarray | None,
    model: str | None,
    chunks: Sequence[Chunk],
    record: Record,
) -> StoreResult:
    """Upsert a communication (one vector: None when it has no text), its thread,
    participants and contacts.

    ``record`` (the ledger and its events) runs after the item's own rows and before the
    rows other items share: contacts and the thread's counters are locked last, for the
    few statements before the commit only, so jobs naming the same people or thread wait
    on each other as briefly as possible.
    """
    ws = payload.workspace_id
    people = comm_people(payload)
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
    row = await conn.fetchrow(
        Q.upsert_communications,
        [ws],
        [thread_id],
        [payload.source],
        [payload.external_id],
        [payload.channel],
        [payload.subject],
        [payload.sender.name if payload.sender else None],
        [payload.sender.address if payload.sender else None],
        [body],
        [content_hash],
        [payload.sent_at],
        [json.dumps(payload.metadata)],
        [sum(c.token_count for c in chunks)],
        [len(chunks)],
        [Vector(vector) if vector is not None else None],
        [model],
        [job_id],
    )
    comm_id = row["id"]
    parts = comm_parts(payload)
    written = comm_result(comm_id, payload, chunks)
    await record(written)
    # Shared rows last: contacts (sorted: one lock order for all), then the thread.
    contacts = await upsert_contacts(conn, ws, people, payload.sent_at)
    if not row["created"]:
        await conn.execute(Q.delete_comm_participants, [ws], [comm_id])
    if parts:
        await conn.execute(
            Q.insert_comm_participants,
            [ws] * len(parts),
            [comm_id] * len(parts),
            [contacts.get(a) if a else None for a, _, _ in parts],
            [r for _, r, _ in parts],
            [n for _, _, n in parts],
            [a for a, _, _ in parts],
        )
    # The thread's counters; a message moved from another thread leaves that one's too.
    threads: dict[tuple[UUID, UUID], str | None] = {}
    if row["old_thread_id"] is not None:
        threads[(ws, row["old_thread_id"])] = None
    if thread_id is not None:
        threads[(ws, thread_id)] = payload.subject
    await refresh_threads(conn, threads)
    return written


async def replace_meeting_participants(
    conn: asyncpg.Connection,
    ws: UUID,
    meeting_id: UUID,
    people: Sequence[Person],
    contacts: dict[str, UUID],
) -> int:
    await conn.execute(Q.delete_meeting_participants, ws, meeting_id)
    if not people:
        return 0
    await conn.execute(
        Q.insert_meeting_participants,
        ws,
        meeting_id,
        [contacts.get(p.address) for p in people],
        [p.name for p in people],
        [p.address for p in people],
    )
    return len(people)


async def store_transcript(
    conn: asyncpg.Connection,
    job_id: UUID,
    payload: TranscriptPayload,
    content_hash: str,
    fmt: str,
    chunks: Sequence[Chunk],
    vectors: np.ndarray,
    model: str,
    record: Record,
) -> StoreResult:
    """Upsert the meeting and transcript, replace its chunks, then ``record``, then the
    shared rows (contacts, participants), as in ``store_communication``."""
    ws = payload.workspace_id
    m = payload.meeting
    meeting_id = await conn.fetchval(
        Q.upsert_meeting,
        ws,
        payload.source,
        payload.external_id,
        m.title,
        m.starts_at,
        m.ends_at,
        json.dumps(payload.metadata),
    )
    ends = [c.end_ms for c in chunks if c.end_ms is not None]
    transcript_id = await conn.fetchval(
        Q.upsert_transcript,
        ws,
        meeting_id,
        payload.source,
        payload.external_id,
        payload.language,
        fmt,
        content_hash,
        len(chunks),
        max(ends) if ends else None,
        job_id,
    )
    await conn.execute(Q.delete_transcript_chunks, ws, transcript_id)
    records = [
        (
            ws,
            transcript_id,
            meeting_id,
            c.index,
            c.speaker,
            list(c.speakers),
            c.start_ms,
            c.end_ms,
            c.text,
            c.content_hash,
            c.token_count,
            vectors[i],
            model,
        )
        for i, c in enumerate(chunks)
    ]
    await copy_chunks(conn, "transcript", records)
    written = StoreResult(
        transcript_id, len(chunks), len(_names(payload.participants)), len(payload.participants)
    )
    await record(written)
    # Shared contact rows are locked last (after the long COPY), as in store_communication.
    contacts = await upsert_contacts(conn, ws, payload.participants, m.starts_at)
    await replace_meeting_participants(conn, ws, meeting_id, payload.participants, contacts)
    return written


async def store_media(
    conn: asyncpg.Connection,
    job_id: UUID,
    payload: MediaPayload,
    content_hash: str,
    chunks: Sequence[Chunk],
    vectors: np.ndarray,
    model: str,
    record: Record,
) -> StoreResult:
    ws = payload.workspace_id
    a = payload.asset
    asset_id = await conn.fetchval(
        Q.upsert_asset,
        ws,
        payload.source,
        payload.external_id,
        a.kind,
        a.title,
        a.mime_type,
        a.duration_ms,
        a.uri,
        content_hash,
        json.dumps(payload.metadata),
        job_id,
    )
    await conn.execute(Q.delete_media_chunks, ws, asset_id)
    records = [
        (
            ws,
            asset_id,
            c.index,
            c.start_ms,
            c.end_ms,
            c.text,
            c.content_hash,
            c.token_count,
            vectors[i],
            model,
        )
        for i, c in enumerate(chunks)
    ]
    await copy_chunks(conn, "media", records)
    written = StoreResult(asset_id, len(chunks), 0, 0)
    await record(written)
    return written
