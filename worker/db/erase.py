"""Erasing a scope from PostgreSQL: a whole workspace, or one source of it (an integration
disconnected). ``cos-worker erase`` runs it between two sweeps of the Redis queue
(``worker.queue.erase``); docs/guarantees.md ("Erasure") says what remains.

Why batches: a workspace holds millions of chunk rows, and one DELETE cascading through
them would hold its locks (and the workers waiting on them) for minutes. Every statement
here deletes at most ``batch_size`` rows and commits alone.

Why it needs no progress table: each statement recomputes what is left of the scope from
the rows themselves, and the phases are ordered so that what a later phase needs to find
its rows (a contact's participant rows, a chunk's transcript) is deleted after it. A run
cut anywhere (crash, Ctrl-C) is finished by running it again; only the final
``scope.erased`` event marks a run that completed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from worker.db.ledger import erasure as ledger_erasure
from worker.db.queries import Q

#: Every tenant table but the ledger (``ledger.erasure``), the event store (kept) and the
#: workspace row (last), children first: the cascades of a batch find little.
WORKSPACE_TABLES = (
    "intel.insight_sources",
    "intel.insights",
    "intel.briefings",
    "work.comments",
    "work.work_items",
    "work.projects",
    "media.asset_links",
    "media.media_chunks",
    "meetings.transcript_chunks",
    "comms.attachments",
    "comms.participants",
    "meetings.participants",
    "meetings.action_items",
    "meetings.transcripts",
    "comms.communications",
    "media.assets",
    "meetings.meetings",
    "comms.threads",
    "comms.channels",
    "ops.sync_cursors",
    "ops.sync_seen",
    "core.integrations",
    "core.contacts",
    "core.founders",
    "core.members",
)
NOT_ERASED_HERE = ("ops.events", "ops.ingestion_jobs")

#: Told after each committed batch: (table, rows deleted). A progress log; a test's stop.
AfterBatch = Callable[[str, int], Awaitable[None]]
#: Told the (job id, arq id) of every ledger row deleted: their Redis results go too.
Forgotten = Callable[[list[tuple[UUID, str | None]]], Awaitable[None]]


class ErasureError(RuntimeError):
    """The database has a tenant table this module does not know how to erase."""


@dataclass(frozen=True)
class Scope:
    """What to erase: a workspace, or one source (connector name) of it."""

    workspace_id: UUID
    source: str | None = None

    @property
    def kind(self) -> str:
        return "workspace" if self.source is None else "source"


async def check_tables(conn: asyncpg.Connection) -> None:
    """Refuse to run when a tenant table exists that ``WORKSPACE_TABLES`` does not name:
    a workspace erasure would leave its rows behind (deleting the workspace row cascades
    to it, but in one unbatched statement)."""
    known = {*WORKSPACE_TABLES, *NOT_ERASED_HERE}
    unknown = [r["name"] for r in await conn.fetch(Q.erase_tenant_tables) if r["name"] not in known]
    if unknown:
        raise ErasureError(f"tenant tables erase.py does not know: {', '.join(unknown)}")


async def _until_done(
    conn: asyncpg.Connection,
    table: str,
    step: Callable[[], Awaitable[int]],
    batch_size: int,
    deleted: Counter[str],
    after_batch: AfterBatch | None,
) -> None:
    while True:
        n = await step()
        if n:
            deleted[table] += n
            if after_batch is not None:
                await after_batch(table, n)
        if n < batch_size:
            return


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[1])  # "DELETE <n>"


async def erase_ledger(
    conn: asyncpg.Connection,
    scope: Scope,
    batch_size: int,
    deleted: Counter[str],
    forgotten: Forgotten | None = None,
    after_batch: AfterBatch | None = None,
) -> None:
    """The scope's ledger rows, first: the reconciler re-enqueues unfinished rows, so none
    may outlive the sweep of the queue."""

    async def step() -> int:
        rows = await ledger_erasure.delete_rows(conn, scope.workspace_id, scope.source, batch_size)
        if rows and forgotten is not None:
            await forgotten(rows)
        return len(rows)

    await _until_done(conn, "ops.ingestion_jobs", step, batch_size, deleted, after_batch)


async def erase_rows(
    conn: asyncpg.Connection,
    scope: Scope,
    batch_size: int,
    after_batch: AfterBatch | None = None,
) -> Counter[str]:
    """Delete the scope's rows (not the ledger's: ``erase_ledger``); rows per table."""
    deleted: Counter[str] = Counter()
    if scope.source is None:
        await _workspace(conn, scope.workspace_id, batch_size, deleted, after_batch)
    else:
        await _source(conn, scope.workspace_id, scope.source, batch_size, deleted, after_batch)
    return deleted


async def _workspace(
    conn: asyncpg.Connection,
    ws: UUID,
    batch_size: int,
    deleted: Counter[str],
    after_batch: AfterBatch | None,
) -> None:
    for table in WORKSPACE_TABLES:
        sql = Q.erase_workspace_rows.format(table=table)

        async def step(sql: str = sql) -> int:
            return _count(await conn.execute(sql, ws, batch_size))

        await _until_done(conn, table, step, batch_size, deleted, after_batch)
    if _count(await conn.execute(Q.erase_workspace_row, ws)):
        deleted["core.workspaces"] += 1


async def _source(
    conn: asyncpg.Connection,
    ws: UUID,
    source: str,
    n: int,
    deleted: Counter[str],
    after_batch: AfterBatch | None,
) -> None:
    async def plain(table: str, sql: str) -> None:
        async def step() -> int:
            return _count(await conn.execute(sql, ws, source, n))

        await _until_done(conn, table, step, n, deleted, after_batch)

    async def counted(table: str, sql: str, threads: set[UUID] | None = None) -> None:
        async def step() -> int:
            row = await conn.fetchrow(sql, ws, source, n)
            assert row is not None
            for name, value in row.items():
                if name == "threads":
                    if threads is not None:
                        threads.update(value or ())
                elif name != table.split(".")[1] and value:
                    deleted[f"{table.split('.')[0]}.{name}"] += int(value)
            return int(row[table.split(".")[1]])

        await _until_done(conn, table, step, n, deleted, after_batch)

    # Contacts first, while the scope's participant rows still say whose they are.
    await plain("core.contacts", Q.erase_source_contacts)
    await plain("meetings.transcript_chunks", Q.erase_source_transcript_chunks)
    await plain("media.media_chunks", Q.erase_source_media_chunks)
    threads: set[UUID] = set()
    await counted("comms.communications", Q.erase_source_communications, threads)
    await counted("media.assets", Q.erase_source_assets)
    await counted("meetings.meetings", Q.erase_source_meetings)
    await plain("meetings.transcripts", Q.erase_source_transcripts)
    await plain("comms.threads", Q.erase_source_threads)
    if threads:  # a thread that kept messages (another source's) has its counters right
        await conn.execute(Q.erase_recount_threads, ws, list(threads))
    row = await conn.fetchrow(Q.erase_source_integrations, ws, source)
    assert row is not None
    for name, schema in (
        ("integrations", "core"),
        ("channels", "comms"),
        ("sync_cursors", "ops"),
        ("sync_seen", "ops"),
    ):
        if row[name]:
            deleted[f"{schema}.{name}"] += int(row[name])


async def scope_job_ids(conn: asyncpg.Connection, scope: Scope) -> set[str]:
    """The scope's unfinished jobs' ids (what a by-reference Redis job names)."""
    rows = await conn.fetch(Q.erase_scope_job_ids, scope.workspace_id, scope.source)
    return {r["id"] for r in rows}


async def remaining(conn: asyncpg.Connection, scope: Scope) -> dict[str, int]:
    """What is left of the scope, per table with rows left (empty once erased)."""
    if scope.source is not None:
        rows = await conn.fetch(Q.erase_source_remaining, scope.workspace_id, scope.source)
        return {r["tbl"]: int(r["n"]) for r in rows if r["n"]}
    left: dict[str, int] = {}
    for table in (*WORKSPACE_TABLES, "ops.ingestion_jobs"):
        n = await conn.fetchval(Q.erase_workspace_remaining.format(table=table), scope.workspace_id)
        if n:
            left[table] = int(n)
    return left


def merge(into: Counter[str], more: Iterable[tuple[str, int]]) -> None:
    for table, n in more:
        into[table] += n
