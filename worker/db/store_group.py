"""The store stage for a group of communications: their rows in a fixed number of
set-based statements.

A mailbox backfill is thousands of one-vector items. Written one by one, each costs
~15 statements and a commit, and on a small machine that, not the vectors, is what the
database spends its time on. These functions write a group of ready items with the same
rows as ``store.write_communication`` / ``store.share_communication`` per item; the group
write path (``worker.ingest.write``) records the ledger between the two, as for one item.
Nothing here commits. A group never holds two jobs of the same item.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np
from pgvector import Vector

from worker.core.payloads import CommunicationPayload
from worker.db.attachments import AttachmentRows
from worker.db.ledger import JobRef, NewEvent
from worker.db.people import comm_parts, comm_people, refresh_threads
from worker.db.queries import Q
from worker.db.store import (
    Written,
    bodies_for_upsert,
    comm_result,
    item_lock_key,
    write_large_bodies,
)
from worker.text.chunking import Chunk


@dataclass
class CommWrite:
    """One communication whose vector is ready: everything its final transaction needs."""

    ref: JobRef
    payload: CommunicationPayload
    queued_at: datetime
    body: str
    content_hash: str
    vector: np.ndarray | None
    model: str | None
    chunks: Sequence[Chunk]
    progress: list[NewEvent] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # result fields (tokens, ...)
    # A raw e-mail's attachments (written on the item path, not in groups)
    attachments: Sequence[AttachmentRows] = ()

    @property
    def item_key(self) -> str:
        p = self.payload
        return item_lock_key(p.kind, p.workspace_id, p.source, p.external_id)


async def stored_job_times(
    conn: asyncpg.Connection, writes: Sequence[CommWrite]
) -> list[datetime | None]:
    """When the job that wrote each item's stored row was queued (None: not stored)."""
    if not writes:
        return []
    rows = await conn.fetch(
        Q.current_comm_jobs_page,
        [w.payload.workspace_id for w in writes],
        [w.payload.source for w in writes],
        [w.payload.external_id for w in writes],
    )
    found = {r["i"]: r["queued_at"] for r in rows}
    return [found.get(i + 1) for i in range(len(writes))]


_ThreadKey = tuple[UUID, str, str]  # (workspace, source, thread_key)


def _thread_keys(writes: Sequence[CommWrite]) -> dict[_ThreadKey, tuple[str | None, str]]:
    """The page's threads in key order: the first subject any item gives, the channel."""
    keys: dict[_ThreadKey, tuple[str | None, str]] = {}
    for w in writes:
        p = w.payload
        if p.thread_key:
            key = (p.workspace_id, p.source, p.thread_key)
            subject, channel = keys.get(key, (None, p.channel))
            keys[key] = (subject if subject is not None else p.subject, channel)
    return dict(sorted(keys.items()))


async def ensure_threads(conn: asyncpg.Connection, writes: Sequence[CommWrite]) -> None:
    """Create the page's missing threads, outside (before) its transaction.

    Why: a thread row inserted inside a page's transaction is a uniqueness claim another
    page must wait on until the first commits, so two pages of one mailbox, which share
    its new threads, were written one after the other (the second waited ~0.7 s on the
    small benchmark). Committed at once, the claim lasts one statement. A page that then
    fails leaves its new threads empty (message_count 0) until a message fills them.
    """
    await _create_threads(conn, _thread_keys(writes))


async def _create_threads(
    conn: asyncpg.Connection, keys: dict[_ThreadKey, tuple[str | None, str]]
) -> None:
    if keys:
        await conn.execute(
            Q.ensure_threads_page,
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [v[0] for v in keys.values()],
            [v[1] for v in keys.values()],
        )


async def _find_threads(
    conn: asyncpg.Connection, keys: Sequence[_ThreadKey]
) -> dict[_ThreadKey, UUID]:
    rows = await conn.fetch(
        Q.find_threads_page, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]
    )
    return {keys[r["i"] - 1]: r["id"] for r in rows}


async def _threads(conn: asyncpg.Connection, writes: Sequence[CommWrite]) -> list[UUID | None]:
    wanted = _thread_keys(writes)
    if not wanted:
        return [None] * len(writes)
    keys = list(wanted)
    ids = await _find_threads(conn, keys)
    if len(ids) < len(keys):  # a page written without ensure_threads first: create them here
        await _create_threads(conn, {k: v for k, v in wanted.items() if k not in ids})
        ids = await _find_threads(conn, keys)
    return [
        ids[(w.payload.workspace_id, w.payload.source, w.payload.thread_key)]
        if w.payload.thread_key
        else None
        for w in writes
    ]


async def write_rows(conn: asyncpg.Connection, writes: Sequence[CommWrite]) -> list[Written]:
    """The items' own rows: their threads exist, their communications are upserted."""
    if not writes:
        return []
    threads = await _threads(conn, writes)
    ps = [w.payload for w in writes]
    rows = await conn.fetch(
        Q.upsert_communications,
        [p.workspace_id for p in ps],
        threads,
        [p.source for p in ps],
        [p.external_id for p in ps],
        [p.channel for p in ps],
        [p.subject for p in ps],
        [p.sender.name if p.sender else None for p in ps],
        [p.sender.address if p.sender else None for p in ps],
        bodies_for_upsert([w.body for w in writes]),
        [w.content_hash for w in writes],
        [p.sent_at for p in ps],
        [json.dumps(p.metadata) for p in ps],
        [sum(c.token_count for c in w.chunks) for w in writes],
        [len(w.chunks) for w in writes],
        [Vector(w.vector) if w.vector is not None else None for w in writes],
        [w.model if w.vector is not None else None for w in writes],
        [w.ref.job_id for w in writes],
    )
    by_job = {r["job_id"]: r for r in rows}
    await write_large_bodies(
        conn, [by_job[w.ref.job_id]["id"] for w in writes], [w.body for w in writes]
    )
    out = []
    for w, thread_id in zip(writes, threads, strict=True):
        r = by_job[w.ref.job_id]
        result = comm_result(r["id"], w.payload, w.chunks)
        out.append(Written(result, bool(r["created"]), thread_id, r["old_thread_id"]))
    return out


async def share_rows(
    conn: asyncpg.Connection, writes: Sequence[CommWrite], written: Sequence[Written]
) -> None:
    """Rows other items share, locked last (as in share_communication): contacts, then
    the participants that point at them, then the threads' counters."""
    if not writes:
        return
    now = datetime.now(UTC)
    seen: dict[tuple[UUID, str], list[Any]] = {}  # (ws, address) -> [name, first, last]
    for w in writes:
        at = w.payload.sent_at or now
        for person in comm_people(w.payload):
            key = (w.payload.workspace_id, person.address)
            if key not in seen:
                seen[key] = [person.name, at, at]
            else:
                s = seen[key]
                s[0] = person.name if person.name is not None else s[0]  # as written in order
                s[1], s[2] = min(s[1], at), max(s[2], at)
    order = sorted(seen)
    contacts: dict[tuple[UUID, str], UUID] = {}
    if order:
        rows = await conn.fetch(
            Q.upsert_contacts,
            [k[0] for k in order],
            [k[1] for k in order],
            [seen[k][0] for k in order],
            [seen[k][1] for k in order],
            [seen[k][2] for k in order],
        )
        contacts = {(r["workspace_id"], r["primary_address"]): r["id"] for r in rows}
    replaced = [
        (w.payload.workspace_id, x.result.source_id)
        for w, x in zip(writes, written, strict=True)
        if not x.created
    ]
    if replaced:
        await conn.execute(
            Q.delete_comm_participants, [r[0] for r in replaced], [r[1] for r in replaced]
        )
    parts = [
        (w.payload.workspace_id, x.result.source_id, address, role, name)
        for w, x in zip(writes, written, strict=True)
        for address, role, name in comm_parts(w.payload)
    ]
    if parts:
        await conn.execute(
            Q.insert_comm_participants,
            [p[0] for p in parts],
            [p[1] for p in parts],
            [contacts.get((p[0], p[2])) if p[2] else None for p in parts],
            [p[3] for p in parts],
            [p[4] for p in parts],
            [p[2] for p in parts],
        )
    threads: dict[tuple[UUID, UUID], str | None] = {}
    for w, x in zip(writes, written, strict=True):
        if x.old_thread_id is not None:  # a moved message leaves a count behind
            threads.setdefault((w.payload.workspace_id, x.old_thread_id), None)
        if x.thread_id is None:
            continue
        thread = (w.payload.workspace_id, x.thread_id)
        if threads.get(thread) is None:  # as item by item: any subject fills a missing one
            threads[thread] = w.payload.subject
    await refresh_threads(conn, threads)
