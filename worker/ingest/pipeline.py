"""The ingestion pipeline: receive -> fetch -> chunk -> embed -> store -> record.

One call of ``Pipeline.run`` handles one delivery of one job. Its guarantees:

* an invalid payload is recorded (ledger + events) with the field and reason and is
  never retried;
* a delivery of an already finished job is a recorded no-op: no rows, no embedding;
* the item's rows, its "stored"/"completed" events and the ledger's ``done`` commit in
  one transaction, so a crash leaves the old state or the new one, never a mix;
* transient failures (API, network, database) ask the job layer to retry later with
  backoff, until ``job_max_tries``; then the item is dead-lettered (status failed).

The pipeline knows nothing about arq: ``jobs.py`` adapts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import numpy as np
import structlog

from worker.core.payloads import (
    CommunicationPayload,
    MediaPayload,
    PayloadError,
    TranscriptPayload,
    content_hash,
    decode_json_payload,
    job_id,
    parse_payload,
)
from worker.core.settings import Settings
from worker.db import ledger, store, store_stream
from worker.db.events import NewEvent
from worker.db.queries import Q
from worker.db.store_group import CommWrite, ensure_threads, outcome, store_communications
from worker.embedding import EmbeddingBatcher
from worker.embedding.linger import bound_arrival
from worker.ingest.delivery import Delivery, RetryLater, is_transient, ledger_id_for
from worker.ingest.embed import ItemEmbedder
from worker.ingest.grouping import GroupWriter
from worker.ingest.normalize import Pulled, iter_chunks, pull, text_hash
from worker.ingest.pickup import Pickups
from worker.ingest.stream import WindowWriter, chain_release
from worker.text.chunking import Chunk

log = structlog.get_logger("worker.ingest.pipeline")

ItemPayload = CommunicationPayload | TranscriptPayload | MediaPayload

_NO_DELIVERY = Delivery()  # a run outside any transport (CLI, tests)


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        return None


class Pipeline:
    """Runs jobs against one pool and one shared embedding batcher."""

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, batcher: EmbeddingBatcher, model: str
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.batcher = batcher
        self.model = model
        self.embedder = ItemEmbedder(
            pool,
            batcher,
            model,
            settings.embedding_dimensions,
            settings.group_write_connections,
            settings.group_write_max_items,
        )
        # Large items (fetched by content_url, or streamed: a pool connection and its
        # transaction for minutes): at most this many at once, so memory stays bounded and
        # small items always find a connection.
        self._large_slots = asyncio.Semaphore(settings.large_items_max)
        # Pickups that arrive together (the items of one page job) share a transaction.
        self.pickups = Pickups(pool, settings)
        self.comm_writer: GroupWriter[CommWrite, dict[str, Any]] = GroupWriter(
            self._store_communications,
            self._store_communication,
            lambda w: w.item_key,
            writers=settings.group_write_connections,
            max_items=settings.group_write_max_items,
            size=lambda w: len(w.body),
            max_size=settings.group_write_max_bytes,
        )

    async def aclose(self) -> None:
        """Let the groups being written finish (before the pool closes)."""
        await self.pickups.aclose()
        await self.embedder.aclose()
        await self.comm_writer.aclose()

    # -- receive --------------------------------------------------------------------
    async def run(self, raw: Any, delivery: Delivery = _NO_DELIVERY) -> dict[str, Any]:
        started = time.perf_counter()
        data: Any = raw
        try:
            data = decode_json_payload(raw)
            payload: ItemPayload = parse_payload(data)
        except PayloadError as exc:
            return await self.reject(data, delivery, exc.field, exc.reason)
        chash = content_hash(payload)  # (hashes the whole payload: once per run)
        jid = uuid.UUID(job_id(payload, chash))
        ref = ledger.JobRef(jid, payload.workspace_id, payload.kind, arq_job_id=delivery.arq_job_id)
        bound = log.bind(
            job_id=str(jid),
            workspace_id=str(payload.workspace_id),
            kind=payload.kind,
            item=f"{payload.source}:{payload.external_id}",
        )
        try:
            received = await self._receive(payload, data, ref, chash, delivery, bound)
        except Exception as exc:
            if not is_transient(exc):
                raise
            # Nothing was recorded yet (or only the received event): the transport retries.
            bound.warning("job.receive_failed", error=f"{type(exc).__name__}: {exc}"[:500])
            raise RetryLater(self.backoff(delivery.job_try), str(exc)) from exc
        if isinstance(received, dict):
            return received
        ref, queued_at = received
        bound = bound.bind(attempt=ref.attempt)
        try:
            result = await self._process(payload, ref, chash, queued_at, bound, delivery.in_page)
        except Exception as exc:  # noqa: BLE001 - classified and recorded below
            return await self._failed(ref, exc, delivery, bound)
        if result.get("status") in ("noop", "skipped"):
            bound.info(f"job.{result['status']}", reason=result.get("reason"))
        bound.info("job.done", seconds=round(time.perf_counter() - started, 3), **result)
        return {"status": result.pop("status", "done"), "job_id": str(jid), **result}

    async def _receive(
        self,
        payload: ItemPayload,
        data: dict[str, Any],
        ref: ledger.JobRef,
        chash: str,
        delivery: Delivery,
        bound: Any,
    ) -> dict[str, Any] | tuple[ledger.JobRef, Any]:
        """Ledger first: record the job, turn a finished job into a no-op, else start it."""
        start = ledger.Start(
            ref,
            payload.source,
            payload.external_id,
            chash,
            data,
            noop_key=f"noop:{delivery.enqueue_time_ms}",
        )
        pickup: ledger.Pickup | None
        try:
            pickup = await self.pickups.start(start, together=delivery.in_page)
        except asyncpg.ForeignKeyViolationError:
            pickup = None  # the only foreign key of the ledger row: its workspace
        if pickup is None:
            return await self.reject(
                data, delivery, "workspace_id", "unknown workspace", ledger_id=ref.job_id
            )
        if pickup.finished:
            bound.info("job.noop", reason=f"already {pickup.status}")
            return {"status": "noop", "job_id": str(ref.job_id)}
        return replace(ref, attempt=pickup.attempt), pickup.queued_at

    async def reject(
        self,
        data: Any,
        delivery: Delivery,
        field: str,
        reason: str,
        ledger_id: uuid.UUID | None = None,
    ) -> dict[str, Any]:
        """Record an invalid payload (a failed ledger row naming the field and reason, and
        its event) and log it; never retried."""
        d = data if isinstance(data, dict) else {}
        ws = _uuid_or_none(d.get("workspace_id"))
        kind = d.get("kind") if d.get("kind") in ("communication", "transcript", "media") else None
        # (the items of a page share its arq id: each is identified by its own payload)
        jid = ledger_id or ledger_id_for(delivery.own_arq_job_id, data)
        async with self.pool.acquire() as conn:
            if ws is not None and not await conn.fetchval(Q.workspace_exists, ws):
                ws = None
            ref = ledger.JobRef(
                jid, ws, kind, attempt=delivery.job_try, arq_job_id=delivery.arq_job_id
            )
            src, ext = d.get("source"), d.get("external_id")
            await ledger.reject(
                conn,
                ref,
                field=field,
                reason=reason,
                raw=d if d else {"raw": str(data)[:1000]},
                source=src if isinstance(src, str) else None,
                external_id=ext if isinstance(ext, str) else None,
            )
        log.error(
            "job.invalid_payload",
            job_id=str(jid),
            arq_job_id=delivery.arq_job_id,
            workspace_id=str(ws) if ws else None,
            kind=kind,
            field=field,
            reason=reason,
        )
        return {"status": "failed", "job_id": str(jid), "field": field, "reason": reason}

    async def _failed(
        self, ref: ledger.JobRef, exc: BaseException, delivery: Delivery, bound: Any
    ) -> dict[str, Any]:
        field = getattr(exc, "field", None)
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        transient = is_transient(exc)
        retry = transient and ref.attempt < self.settings.job_max_tries
        event = ledger.JOB_RETRYING if retry else ledger.JOB_FAILED
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await ledger.finish(conn, ref, event, error=str(reason)[:2000], error_field=field)
        except Exception as record_exc:  # noqa: BLE001
            # The database itself is down: let the transport retry the whole delivery.
            bound.warning("job.record_failed", error=type(record_exc).__name__)
            raise RetryLater(self.backoff(ref.attempt), str(reason)) from exc
        if retry:
            delay = self.backoff(ref.attempt)
            bound.warning("job.retrying", error=str(reason)[:500], field=field, delay_s=delay)
            raise RetryLater(delay, str(reason))
        bound.error(
            "job.failed",
            error=str(reason)[:500],
            field=field,
            dead_letter=transient,
            attempts=ref.attempt,
        )
        return {"status": "failed", "job_id": str(ref.job_id), "field": field, "reason": reason}

    def backoff(self, attempt: int) -> float:
        """Job-level retry delay: exponential in the attempt, capped at 5 min, jittered."""
        base = self.settings.retry_base_delay_s * (2 ** max(0, attempt - 1))
        return float(min(base, 300.0) * (0.5 + np.random.random()))

    @contextlib.asynccontextmanager
    async def _large_slot(
        self, arrived: Any, *, held: bool = False
    ) -> AsyncIterator[Callable[[], None]]:
        """Hold one of the ``LARGE_ITEMS_MAX`` slots (already ``held``: none to take).

        The job is not "on the way" to the batcher while it waits for the slot (requests
        must not linger for it); it is announced again, with the handle yielded here,
        once it has one, until the block ends.
        """
        if arrived is not None:
            arrived()
        async with contextlib.nullcontext() if held else self._large_slots:
            again = self.batcher.expect()
            try:
                yield again
            finally:
                again()

    # -- fetch -> chunk -> embed -> store -> record -----------------------------------
    async def _process(
        self,
        payload: ItemPayload,
        ref: ledger.JobRef,
        chash: str,
        queued_at: Any,
        bound: Any,
        in_page: bool = False,
    ) -> dict[str, Any]:
        # Progress events (pulled, chunked, embedded) are appended with the final
        # transaction's events, each stamped with the time its step ended: three fewer
        # transactions per item. If the item fails they are recorded before the failure.
        progress: list[NewEvent] = []
        # Announce this job to the shared batcher until its rows are queued there, so
        # requests linger for jobs still on their way (and never when none is).
        arrived = bound_arrival() or self.batcher.expect()
        try:
            if getattr(payload, "content_url", None) is None:
                return await self._steps(
                    payload, ref, chash, queued_at, bound, progress, arrived, in_page=in_page
                )
            # A fetched body may be up to FETCH_MAX_BYTES: only a few are fetched and held
            # at once (WORKER_CONCURRENCY jobs may be in flight). Not "on the way" to the
            # batcher while waiting for a slot.
            async with self._large_slot(arrived) as again:
                return await self._steps(
                    payload,
                    ref,
                    chash,
                    queued_at,
                    bound,
                    progress,
                    again,
                    holds_slot=True,
                    in_page=in_page,
                )
        except Exception:
            if progress:
                try:
                    async with self.pool.acquire() as conn, conn.transaction():
                        await ledger.append_events(conn, progress)
                except Exception as exc:  # noqa: BLE001 - the failure itself is what matters
                    bound.warning("job.progress_not_recorded", error=type(exc).__name__)
            raise
        finally:
            arrived()

    async def _steps(
        self,
        payload: ItemPayload,
        ref: ledger.JobRef,
        chash: str,
        queued_at: Any,
        bound: Any,
        progress: list[NewEvent],
        arrived: Any = None,
        holds_slot: bool = False,
        in_page: bool = False,
    ) -> dict[str, Any]:
        def step(event_type: str, **data: Any) -> None:
            event = ref.event(event_type, **data)
            progress.append(replace(event, occurred_at=datetime.now(UTC)))

        t0 = time.perf_counter()
        pulled = await pull(payload, self.settings)
        subject = payload.subject if isinstance(payload, CommunicationPayload) else None
        stream = iter_chunks(pulled, self.settings, subject)
        limit = self.settings.stream_threshold_chunks
        chunks = list(itertools.islice(stream, limit + 1))
        if len(chunks) > limit and not isinstance(payload, CommunicationPayload):
            # A large item: embed and write window by window in one transaction.
            head, chunks = chunks, []
            async with self._large_slot(arrived, held=holds_slot) as again:
                return await self._stream(
                    payload,
                    ref,
                    chash,
                    queued_at,
                    bound,
                    progress,
                    step,
                    pulled,
                    chain_release(head, stream),
                    again,
                    t0,
                )
        step(
            ledger.CONTENT_PULLED,
            format=pulled.fmt,
            fetched_bytes=pulled.fetched_bytes,
            chars=pulled.size,
        )
        tokens = sum(c.token_count for c in chunks)
        step(ledger.CONTENT_CHUNKED, chunks=len(chunks), tokens=tokens)
        t1 = time.perf_counter()
        if isinstance(payload, CommunicationPayload):
            embedded_hash = text_hash(payload.subject, pulled.text)
            vector, fresh = await self.embedder.communication(
                payload, chunks, embedded_hash, arrived, together=in_page
            )
            vectors = None
        else:
            vectors, fresh = await self.embedder.chunks(payload, chunks, arrived)
        if arrived is not None:
            arrived()  # reused vectors / nothing to embed: stop being waited for
        t2 = time.perf_counter()
        fresh_tokens = sum(c.token_count for c in fresh)
        step(
            ledger.CONTENT_EMBEDDED,
            model=self.model,
            embedded=len(fresh),
            reused=len(chunks) - len(fresh),
            tokens=fresh_tokens,
        )
        extra = {"tokens": tokens, "embedded_chunks": len(fresh), "embedded_tokens": fresh_tokens}
        if isinstance(payload, CommunicationPayload):
            # Ready communications are written in groups (store_page): one response
            # answers hundreds of them at once.
            result = await self.comm_writer.submit(
                CommWrite(
                    ref,
                    payload,
                    queued_at,
                    pulled.text or "",
                    embedded_hash,
                    vector,
                    self.model if vector is not None else None,
                    chunks,
                    progress,
                    extra,
                )
            )
        else:
            assert vectors is not None
            result = await self._store_chunked(
                payload, ref, queued_at, progress, chash, pulled.fmt, chunks, vectors, extra
            )
        t3 = time.perf_counter()
        return {
            **result,
            "fetch_chunk_s": round(t1 - t0, 4),
            "embed_s": round(t2 - t1, 4),
            "store_s": round(t3 - t2, 4),
        }

    def _record(
        self,
        conn: asyncpg.Connection,
        ref: ledger.JobRef,
        progress: list[NewEvent],
        extra: dict[str, Any],
        result: dict[str, Any],
    ) -> store.Record:
        async def record(written: store.StoreResult) -> None:
            # The ledger's done and the events, before the shared rows are locked.
            result.update(status="done", **written.as_dict(), **extra)
            stored = ref.event(ledger.CONTENT_STORED, **written.as_dict())
            ledger_result = {k: v for k, v in result.items() if k != "status"}
            await ledger.finish(
                conn,
                ref,
                ledger.JOB_COMPLETED,
                result=ledger_result,
                extra_events=[*progress, stored],
                locked=True,
            )

        return record

    async def _store_chunked(
        self,
        payload: TranscriptPayload | MediaPayload,
        ref: ledger.JobRef,
        queued_at: Any,
        progress: list[NewEvent],
        chash: str,
        fmt: str,
        chunks: list[Chunk],
        vectors: np.ndarray,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            if early := await self._stale(conn, payload, ref, queued_at, progress):
                return early
            result: dict[str, Any] = {}
            record = self._record(conn, ref, progress, extra, result)
            if isinstance(payload, TranscriptPayload):
                await store.store_transcript(
                    conn, ref.job_id, payload, chash, fmt, chunks, vectors, self.model, record
                )
            else:
                await store.store_media(
                    conn, ref.job_id, payload, chash, chunks, vectors, self.model, record
                )
        return result

    async def _store_communication(self, w: CommWrite) -> dict[str, Any]:
        """One communication in its own transaction: a group's fallback, item by item."""
        async with self.pool.acquire() as conn, conn.transaction():
            if early := await self._stale(conn, w.payload, w.ref, w.queued_at, w.progress):
                return early
            result: dict[str, Any] = {}
            await store.store_communication(
                conn,
                w.ref.job_id,
                w.payload,
                w.body,
                w.content_hash,
                w.vector,
                w.model,
                w.chunks,
                self._record(conn, w.ref, w.progress, w.extra, result),
            )
        return result

    async def _store_communications(self, writes: Sequence[CommWrite]) -> list[dict[str, Any]]:
        if len(writes) == 1:
            # A lone item (light load, or grouping off: GROUP_WRITE_MAX_ITEMS=1): the
            # per-item statements, two round trips fewer than a page of one.
            return [await self._store_communication(w) for w in writes]
        async with self.pool.acquire() as conn:
            await ensure_threads(conn, writes)  # committed at once: see its docstring
            async with conn.transaction():
                return await store_communications(conn, writes)

    async def _stale(
        self,
        conn: asyncpg.Connection,
        payload: ItemPayload,
        ref: ledger.JobRef,
        queued_at: Any,
        progress: list[NewEvent],
    ) -> dict[str, Any] | None:
        """Inside the item's final transaction: the result if this job must not write."""
        key = store.item_lock_key(
            payload.kind, payload.workspace_id, payload.source, payload.external_id
        )
        if (finished := await ledger.lock_unfinished(conn, ref, item_lock=key)) is not None:
            # A concurrent delivery of this same job stored it first: its write stands.
            await ledger.append_events(
                conn,
                [
                    *progress,
                    ref.event(ledger.JOB_NOOP, "noop:concurrent", reason=f"already {finished}"),
                ],
            )
            return outcome("noop", chunks=0, reason=f"already {finished} (concurrent delivery)")
        if await store.newer_version_stored(
            conn, payload.kind, payload.workspace_id, payload.source, payload.external_id, queued_at
        ):
            reason = "superseded by newer content"
            await ledger.finish(
                conn,
                ref,
                ledger.JOB_SKIPPED,
                result={"reason": reason},
                extra_events=progress,
                locked=True,
            )
            return outcome("skipped", chunks=0, reason=reason)
        return None

    async def _stream(
        self,
        payload: TranscriptPayload | MediaPayload,
        ref: ledger.JobRef,
        chash: str,
        queued_at: Any,
        bound: Any,
        progress: list[NewEvent],
        step: Callable[..., None],
        pulled: Pulled,
        chunks: Iterator[Chunk],
        arrived: Any,
        t0: float,
    ) -> dict[str, Any]:
        """Store a large item window by window inside its one final transaction.

        The transaction is opened first (same checks as the short path), the source row
        is upserted, the item's previous vectors are staged for reuse and its old chunks
        deleted; then for each window of ``stream_window_chunks`` chunks: reusable vectors
        are looked up, the rest are sent to the shared batcher, and the window is COPYed
        while the next window is being embedded. Only two windows of chunks and vectors
        are alive at a time. Progress events, the stored event and the ledger's ``done``
        commit with the rows: a failure anywhere leaves the previous version intact.
        """
        t1 = time.perf_counter()
        async with self.pool.acquire() as conn, conn.transaction():
            seen = replace(
                ref.event(
                    ledger.CONTENT_PULLED,
                    format=pulled.fmt,
                    fetched_bytes=pulled.fetched_bytes,
                    chars=pulled.size,
                ),
                occurred_at=datetime.now(UTC),
            )
            if early := await self._stale(conn, payload, ref, queued_at, [*progress, seen]):
                return early
            if isinstance(payload, TranscriptPayload):
                target = await store_stream.open_transcript(
                    conn, ref.job_id, payload, chash, pulled.fmt, self.model
                )
            else:
                target = await store_stream.open_media(conn, ref.job_id, payload, chash, self.model)
            counts = await WindowWriter(self.settings, self.batcher, self.model).write(
                conn, target, chunks, arrived
            )
            t2 = time.perf_counter()
            step(
                ledger.CONTENT_PULLED,
                format=pulled.fmt,
                fetched_bytes=pulled.fetched_bytes,
                chars=pulled.size,
            )
            step(ledger.CONTENT_CHUNKED, chunks=target.chunks, tokens=counts.tokens)
            step(
                ledger.CONTENT_EMBEDDED,
                model=self.model,
                embedded=counts.embedded,
                reused=target.chunks - counts.embedded,
                tokens=counts.embedded_tokens,
            )
            if isinstance(payload, TranscriptPayload):
                written = await store_stream.close_transcript(
                    conn, ref.job_id, payload, chash, pulled.fmt, target
                )
            else:
                written = store_stream.close_media(target)
            result = {
                **written.as_dict(),
                "tokens": counts.tokens,
                "embedded_chunks": counts.embedded,
                "embedded_tokens": counts.embedded_tokens,
                "windows": target.windows,
            }
            stored = ref.event(ledger.CONTENT_STORED, **written.as_dict())
            await ledger.finish(
                conn,
                ref,
                ledger.JOB_COMPLETED,
                result=result,
                extra_events=[*progress, stored],
                locked=True,
            )
        t3 = time.perf_counter()
        # fetch/chunk/embed overlap the writes here: embed_s = the streamed part.
        return {
            **result,
            "fetch_chunk_s": round(t1 - t0, 4),
            "embed_s": round(t2 - t1, 4),
            "store_s": round(t3 - t2, 4),
        }
