"""The store and record stages: the three write paths, one shape.

Each path opens the item's final transaction(s) and does the same four things in the same
order: claim the job in the ledger (a job another delivery finished is a no-op, a job
older than the stored row is skipped), write the item's own rows (``worker.db.store``),
record the ledger and its events (``worker.db.ledger``), then the rows items share
(contacts, participants, thread counters), locked last so jobs naming the same people
wait on each other for the few statements before the commit only. Rows, events and the
ledger's ``done`` commit together: a crash leaves the old state or the new, never a mix.

* ``ItemWrite``: one item, one transaction (transcripts, media, a lone communication);
* ``GroupWrite``: communications whose vectors are ready together (one response answers
  hundreds), in groups of set-based statements; a failed group is written again item by
  item, so only the bad item fails;
* ``StreamWrite``: a large item, embedded and COPYed window by window inside its one
  transaction (bounded memory, still all or nothing).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg

from worker.core.settings import Settings
from worker.db import ledger, store, store_group
from worker.db.store_group import CommWrite
from worker.ingest.embed import ItemEmbedder
from worker.ingest.grouping import GroupWriter
from worker.ingest.job import Job, outcome
from worker.ingest.kinds import KINDS, Ready
from worker.ingest.normalize import Pulled
from worker.ingest.stream import WindowWriter
from worker.text.chunking import Chunk

SUPERSEDED = "superseded by newer content"


async def claim_item(
    conn: asyncpg.Connection, item: Ready | Job, progress: Sequence[ledger.NewEvent]
) -> dict[str, Any] | None:
    """Inside the item's final transaction: the result if this job must not write (its
    ``progress`` events are recorded with the no-op or the skip)."""
    if (reason := await ledger.claim(conn, item.ref, item.item_key, progress)) is not None:
        # A concurrent delivery of this same job stored it first: its write stands.
        return outcome("noop", chunks=0, reason=f"{reason} (concurrent delivery)")
    p = item.payload
    if await store.newer_version_stored(
        conn, p.item_kind, p.workspace_id, p.source, p.external_id, item.queued_at
    ):
        await ledger.skip(conn, item.ref, SUPERSEDED, progress)
        return outcome("skipped", chunks=0, reason=SUPERSEDED)
    return None


class ItemWrite:
    """One item in its own transaction."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def write(self, ready: Ready) -> dict[str, Any]:
        kind = KINDS[ready.payload.kind]
        async with self.pool.acquire() as conn, conn.transaction():
            if (early := await claim_item(conn, ready, ready.progress)) is not None:
                return early
            written = await kind.write(conn, ready)
            result = {**written.as_dict(), **ready.extra}
            await ledger.complete(conn, ready.ref, written.as_dict(), result, ready.progress)
            await kind.share(conn, ready.payload, written)
        return outcome("done", **result)

    async def skip(self, job: Job, reason: str) -> dict[str, Any]:
        """An item with nothing to read (a scanned PDF, an encrypted one, not a document):
        recorded as skipped with the reason, its stored rows untouched."""
        async with self.pool.acquire() as conn, conn.transaction():
            if (early := await claim_item(conn, job, job.progress)) is not None:
                return early
            await ledger.skip(conn, job.ref, reason, job.progress)
        return outcome("skipped", chunks=0, reason=reason)


class GroupWrite:
    """Communications written in groups (``grouping.GroupWriter``: nothing waits on a
    timer; while a group is written the next fills up)."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, items: ItemWrite) -> None:
        self.pool = pool
        self.items = items
        self.writer: GroupWriter[CommWrite, dict[str, Any]] = GroupWriter(
            self._group,
            items.write,
            lambda w: w.item_key,
            writers=settings.group_write_connections,
            max_items=settings.group_write_max_items,
            size=lambda w: len(w.body),
            max_size=settings.group_write_max_bytes,
        )

    async def write(self, ready: CommWrite, *, first: bool = False) -> dict[str, Any]:
        """``first``: a live item's write, taken ahead of the bulk writes queued."""
        return await self.writer.submit(ready, first=first)

    async def _group(self, writes: Sequence[CommWrite]) -> list[dict[str, Any]]:
        if len(writes) == 1:
            # A lone item (light load, or grouping off: GROUP_WRITE_MAX_ITEMS=1): the
            # per-item statements, two round trips fewer than a group of one.
            return [await self.items.write(w) for w in writes]
        async with self.pool.acquire() as conn:
            await store_group.ensure_threads(conn, writes)  # committed at once: see there
            async with conn.transaction():
                return await store_communications(conn, writes)

    async def aclose(self) -> None:
        await self.writer.aclose()


async def store_communications(
    conn: asyncpg.Connection, writes: Sequence[CommWrite]
) -> list[dict[str, Any]]:
    """Write a group of communications and record each job; results in input order.

    The same rows, events and ledger transitions as ``ItemWrite`` per item, with the same
    checks, in a fixed number of statements. Must run inside a transaction the caller
    commits; if any statement fails the whole group rolls back.
    """
    if len({w.item_key for w in writes}) != len(writes):
        raise ValueError("a page holds one job per item")
    results: list[dict[str, Any] | None] = [None] * len(writes)
    refs, keys = [w.ref for w in writes], [w.item_key for w in writes]
    for i, reason in (
        await ledger.claim_many(conn, refs, keys, [w.progress for w in writes])
    ).items():
        results[i] = outcome("noop", chunks=0, reason=f"{reason} (concurrent delivery)")
    todo = [i for i, r in enumerate(results) if r is None]
    stored_at = await store_group.stored_job_times(conn, [writes[i] for i in todo])
    finishes: list[ledger.Finish] = []
    live: list[int] = []
    for i, queued in zip(todo, stored_at, strict=True):
        w = writes[i]
        if queued is not None and queued > w.queued_at:
            finishes.append(
                ledger.Finish(w.ref, ledger.JOB_SKIPPED, {"reason": SUPERSEDED}, w.progress)
            )
            results[i] = outcome("skipped", chunks=0, reason=SUPERSEDED)
        else:
            live.append(i)
    written = await store_group.write_rows(conn, [writes[i] for i in live])
    for i, row in zip(live, written, strict=True):
        w = writes[i]
        res = {**row.as_dict(), **w.extra}
        finishes.append(ledger.Finish(w.ref, ledger.JOB_COMPLETED, res, w.progress, row.as_dict()))
        results[i] = outcome("done", **res)
    await ledger.finish_many(conn, finishes)
    await store_group.share_rows(conn, [writes[i] for i in live], written)
    done = [r for r in results if r is not None]
    assert len(done) == len(writes)  # every job ended noop, skipped or done
    return done


class StreamWrite:
    """A large item, window by window, inside its one final transaction."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, embedder: ItemEmbedder) -> None:
        self.pool = pool
        self.windows = WindowWriter(settings, embedder)
        self.model = embedder.model

    async def write(self, job: Job, pulled: Pulled, chunks: Iterator[Chunk]) -> dict[str, Any]:
        """The transaction is opened first (same claim as the other paths), the source row
        is upserted, the item's previous vectors are staged for reuse and its old chunks
        deleted; then each window's reusable vectors are looked up, the rest embedded, and
        the window COPYed while the next is being embedded. Only two windows of chunks and
        vectors are alive at a time. A failure anywhere leaves the previous version intact.
        """
        pulled_data: dict[str, Any] = {"format": pulled.fmt, "fetched_bytes": pulled.fetched_bytes}
        t1 = time.perf_counter()
        async with self.pool.acquire() as conn, conn.transaction():
            seen = job.ref.event(ledger.CONTENT_PULLED, **pulled_data, chars=pulled.size)
            if (early := await claim_item(conn, job, [*job.progress, seen])) is not None:
                return early
            target = await job.kind.open_stream(conn, job, pulled.fmt, self.model)
            counts = await self.windows.write(conn, target, chunks, job.flow)
            t2 = time.perf_counter()
            job.step(ledger.CONTENT_PULLED, **pulled_data, chars=pulled.size)
            job.step(ledger.CONTENT_CHUNKED, chunks=target.chunks, tokens=counts.tokens)
            job.step(
                ledger.CONTENT_EMBEDDED,
                model=self.model,
                embedded=counts.embedded,
                reused=target.chunks - counts.embedded,
                tokens=counts.embedded_tokens,
            )
            written = await job.kind.close_stream(conn, job, pulled.fmt, target)
            result = {
                **written.as_dict(),
                "tokens": counts.tokens,
                "embedded_chunks": counts.embedded,
                "embedded_tokens": counts.embedded_tokens,
                "windows": target.windows,
            }
            await ledger.complete(conn, job.ref, written.as_dict(), result, job.progress)
            await job.kind.share(conn, job.payload, written)
        t3 = time.perf_counter()
        # fetch/chunk/embed overlap the writes here: embed_s = the streamed part.
        timings = {"embed_s": round(t2 - t1, 4), "store_s": round(t3 - t2, 4)}
        return outcome("done", **result, **timings)
