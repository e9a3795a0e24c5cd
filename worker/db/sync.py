"""A connector's sync state: its source's ``core.integrations`` row and its cursors in
``ops.sync_cursors``, written in the transaction that records a page's jobs.

Why in that transaction: "the page's jobs are recorded" and "the cursor moved past the
page" are then one fact. A connector killed anywhere either finds its cursor before the
page (the jobs were not recorded either: it sends the page again) or after it (every job
of the page is in the ledger, which the reconciler replays if Redis never got them).

A source is an integration by name: the row whose ``provider`` is the payloads'
``source`` in that workspace, made on first use.

A full sync (LangChain's indexing "full" cleanup, made crash-safe and resumable) is a
state in the source's cursors (stream ``@full-sync``: id, state, when it began) and the
items its pages carried (``ops.sync_seen``, written with each page's jobs). At a good
end, the source's stored items it did not see and that no ingest recorded since it began
wrote are deleted, as deletion jobs in batches; a sync that fails or is replaced by a new
one deletes nothing. Every step is in the database: a connector that dies resumes the
same sync (:func:`current_full_sync`), an end cut short is finished by ending it again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from worker.db import ledger
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


@dataclass(frozen=True)
class FullSync:
    """A full sync of ``source`` in ``workspace_id`` (see the module doc)."""

    workspace_id: UUID
    source: str
    id: UUID
    started_at: datetime


def _state(sync: FullSync, state: str, **more: Any) -> str:
    data = {"id": str(sync.id), "state": state, "started_at": sync.started_at.isoformat()}
    return json.dumps({**data, **more}, default=str)


async def full_state(
    conn: asyncpg.Connection, workspace_id: UUID, source: str
) -> tuple[UUID, dict[str, Any] | None]:
    """The source's integration and its full sync's state (locked; None: never began)."""
    iid = await integration_id(conn, workspace_id, source)
    raw = await conn.fetchval(Q.sync_full_state, workspace_id, iid)
    return iid, None if raw is None else json.loads(raw)


def _of(workspace_id: UUID, source: str, state: dict[str, Any]) -> FullSync:
    started = datetime.fromisoformat(state["started_at"])
    return FullSync(workspace_id, source, UUID(state["id"]), started)


async def begin_full_sync(conn: asyncpg.Connection, workspace_id: UUID, source: str) -> FullSync:
    """A new full sync of the source; one still running is abandoned (deletes nothing)."""
    old: FullSync | None = None
    async with conn.transaction():
        iid, state = await full_state(conn, workspace_id, source)
        if state is not None and state["state"] in ("running", "ending"):
            old = _of(workspace_id, source, state)
            await ledger.record_sync_end(
                conn,
                workspace_id,
                old.id,
                ledger.SYNC_FAILED,
                {"reason": "abandoned", "deleted": 0},
            )
        sync = FullSync(workspace_id, source, uuid4(), datetime.now(UTC))
        await conn.execute(Q.sync_full_set, workspace_id, iid, _state(sync, "running"))
    if old is not None:
        await _forget_seen(conn, old.id)
    return sync


async def _forget_seen(conn: asyncpg.Connection, sync_id: UUID, batch: int = 5000) -> None:
    while await conn.fetch(Q.sync_forget_seen, sync_id, batch):
        pass


async def current_full_sync(
    conn: asyncpg.Connection, workspace_id: UUID, source: str
) -> FullSync | None:
    """The source's full sync still running (or ending), to resume; None if there is none."""
    async with conn.transaction():
        _, state = await full_state(conn, workspace_id, source)
    if state is None or state["state"] not in ("running", "ending"):
        return None
    return _of(workspace_id, source, state)


async def mark_seen(
    conn: asyncpg.Connection, sync: FullSync, items: Sequence[tuple[str, str]]
) -> None:
    """The (kind, external id) a page of the running ``sync`` carried, in the caller's
    transaction (the one recording the page's jobs)."""
    _, state = await full_state(conn, sync.workspace_id, sync.source)
    if state is None or state["id"] != str(sync.id) or state["state"] != "running":
        raise ValueError(f"full sync {sync.id} of {sync.source!r} is not running")
    await conn.execute(
        Q.sync_mark_seen,
        sync.workspace_id,
        sync.source,
        sync.id,
        [k for k, _ in items],
        [e for _, e in items],
    )


async def start_ending(conn: asyncpg.Connection, sync: FullSync) -> datetime:
    """Move the sync to ``ending`` (once) and return its deletions' time, fixed then: an
    end cut short and run again makes the same deletion jobs (their ids are their
    content's), not new ones."""
    async with conn.transaction():
        iid, state = await full_state(conn, sync.workspace_id, sync.source)
        if state is None or state["id"] != str(sync.id):
            raise ValueError(f"full sync {sync.id} of {sync.source!r} is not the current one")
        if state["state"] == "ending":
            return datetime.fromisoformat(state["deleted_at"])
        if state["state"] != "running":
            raise ValueError(f"full sync {sync.id} of {sync.source!r} already {state['state']}")
        deleted_at = datetime.now(UTC)
        await conn.execute(
            Q.sync_full_set, sync.workspace_id, iid, _state(sync, "ending", deleted_at=deleted_at)
        )
    return deleted_at


async def unseen(
    conn: asyncpg.Connection, sync: FullSync, after: tuple[str, str], limit: int
) -> list[tuple[str, str]]:
    """A batch of the source's items the sync did not see (keyset ``after``)."""
    rows = await conn.fetch(
        Q.sync_unseen_batch,
        sync.workspace_id,
        sync.source,
        sync.id,
        sync.started_at,
        after[0],
        after[1],
        limit,
    )
    return [(r["kind"], r["external_id"]) for r in rows]


async def finish(
    conn: asyncpg.Connection,
    sync: FullSync,
    *,
    deleted: int,
    error: str | None = None,
    batch: int = 5000,
) -> dict[str, Any]:
    """End the sync: done (``deleted`` deletion jobs enqueued) or failed (``error``:
    nothing deleted, the integration shows the error); its seen rows go, in batches; one
    ``sync.completed`` / ``sync.failed`` event with counts. Returns the report."""
    seen = int(await conn.fetchval(Q.sync_count_seen, sync.id))
    await _forget_seen(conn, sync.id, batch)
    state = "failed" if error is not None else "done"
    report: dict[str, Any] = {"state": state, "seen": seen, "deleted": deleted}
    async with conn.transaction():
        iid, current = await full_state(conn, sync.workspace_id, sync.source)
        if current is not None and current["id"] == str(sync.id):
            ended = _state(sync, state, ended_at=datetime.now(UTC), seen=seen, deleted=deleted)
            await conn.execute(Q.sync_full_set, sync.workspace_id, iid, ended)
        event = ledger.SYNC_FAILED if error is not None else ledger.SYNC_COMPLETED
        await ledger.record_sync_end(conn, sync.workspace_id, sync.id, event, report)
        if error is not None:
            await conn.execute(Q.sync_record_error, sync.workspace_id, iid, error[:2000])
    return report
