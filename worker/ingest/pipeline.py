"""The ingestion pipeline: receive -> fetch -> chunk -> embed -> store -> record.

One call of ``Pipeline.run`` handles one delivery of one job. Its guarantees:

* an invalid payload is recorded (ledger + events) with the field and reason and is
  never retried;
* a delivery of an already finished job is a recorded no-op: no rows, no embedding;
* the item's rows, its "stored"/"completed" events and the ledger's ``done`` commit in
  one transaction, so a crash leaves the old state or the new one, never a mix;
* transient failures (API, network, database) ask the job layer to retry later with
  backoff, until ``job_max_tries``; then the item is dead-lettered (status failed).

Each stage lives in its own module (``receive``, ``normalize``, ``embed``, ``write``);
what differs between payload kinds lives in ``kinds``. The pipeline knows nothing about
arq: ``worker.queue.jobs`` adapts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import numpy as np

from worker.core.payloads import DeletionPayload
from worker.core.settings import Settings
from worker.db import ledger
from worker.db.store_group import CommWrite
from worker.embedding import EmbeddingBatcher
from worker.ingest.delete import DeleteWrite
from worker.ingest.delivery import Delivery, RetryLater, is_transient
from worker.ingest.embed import ItemEmbedder
from worker.ingest.grouping import GroupWriter
from worker.ingest.job import Job
from worker.ingest.normalize import iter_chunks, pull
from worker.ingest.parsing import Parser
from worker.ingest.pickup import Pickups
from worker.ingest.receive import Receiver
from worker.ingest.stream import chain_release
from worker.ingest.write import GroupWrite, ItemWrite, StreamWrite

_NO_DELIVERY = Delivery()  # a run outside any transport (CLI, tests)


class Pipeline:
    """Runs jobs against one pool and one shared embedding batcher."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        batcher: EmbeddingBatcher,
        model: str,
        preload: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.batcher = batcher
        self.model = model
        self.receiver = Receiver(pool, settings, batcher.expect)
        self.embedder = ItemEmbedder(
            pool,
            batcher,
            model,
            settings.embedding_dimensions,
            settings.group_write_connections,
            settings.group_write_max_items,
        )
        self.parser = Parser(settings, preload)  # parsing children
        self.items = ItemWrite(pool)
        self.deletions = DeleteWrite(pool)
        self.groups = GroupWrite(pool, settings, self.items)
        self.streams = StreamWrite(pool, settings, self.embedder)
        # Large items (fetched by content_url, or streamed: a pool connection and its
        # transaction for minutes): at most this many at once, so memory stays bounded and
        # small items always find a connection.
        self.large_slots = asyncio.Semaphore(settings.large_items_max)

    async def run(self, raw: Any, delivery: Delivery = _NO_DELIVERY) -> dict[str, Any]:
        received = await self.receiver.receive(raw, delivery, self.backoff)
        if not isinstance(received, Job):
            return received  # rejected, or a no-op: recorded
        job = received
        try:
            result = await self._process(job)
        except Exception as exc:  # noqa: BLE001 - classified and recorded below
            return await self._failed(job, exc)
        finally:
            job.flow.arrived()
        return job.finished(result)

    async def _process(self, job: Job) -> dict[str, Any]:
        """fetch -> chunk -> embed -> store -> record, each stage timed."""
        if isinstance(job.payload, DeletionPayload):  # store -> record: nothing to read
            return await self.deletions.write(job)
        # A fetched body may be up to FETCH_MAX_BYTES: only a few are held at once.
        # (A raw e-mail inline is not large: its parse is bounded by the parsing children,
        # PARSE_WORKERS; holding a slot through its embedding would let only two messages
        # fill a request.)
        fetched = job.payload.content_url is not None
        async with job.flow.holding(self.large_slots) if fetched else contextlib.nullcontext():
            t0 = time.perf_counter()
            pulled = await pull(job.payload, self.settings, self.parser)
            if (skipped := job.read(pulled)) is not None:  # a document with nothing to read
                return await self.items.skip(job, skipped)
            stream = iter_chunks(pulled, self.settings, job.kind.subject(job.payload))
            limit = self.settings.stream_threshold_chunks
            chunks = list(itertools.islice(stream, limit + 1))
            if job.kind.streams and len(chunks) > limit:  # a large item: window by window
                async with job.flow.holding(self.large_slots):
                    t1 = time.perf_counter()
                    result = await self.streams.write(job, pulled, chain_release(chunks, stream))
                    return {**result, "fetch_chunk_s": round(t1 - t0, 4)}
            job.chunked(pulled, chunks)
            t1 = time.perf_counter()
            ready = await job.kind.embed(self.embedder, job, pulled, chunks)
            job.flow.arrived()  # reused vectors / nothing to embed: stop being waited for
            t2 = time.perf_counter()
            result = await job.kind.store(self, ready, job.flow.live)
            t3 = time.perf_counter()
        timings = {"fetch_chunk_s": t1 - t0, "embed_s": t2 - t1, "store_s": t3 - t2}
        return {**result, **{k: round(v, 4) for k, v in timings.items()}}

    async def _failed(self, job: Job, exc: BaseException) -> dict[str, Any]:
        """Record the failure (with the progress so far): retry later while transient and
        tries remain, else dead-letter."""
        ref, bound = job.ref, job.log
        field = getattr(exc, "field", None)
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        transient = is_transient(exc)
        retry = transient and ref.attempt < self.settings.job_max_tries
        event = ledger.JOB_RETRYING if retry else ledger.JOB_FAILED
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await ledger.finish(
                    conn,
                    ref,
                    event,
                    error=str(reason)[:2000],
                    error_field=field,
                    extra_events=job.progress,
                )
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

    async def reject(
        self, data: Any, delivery: Delivery, field: str, reason: str
    ) -> dict[str, Any]:
        """Record an invalid delivery (see ``Receiver.reject``)."""
        return await self.receiver.reject(data, delivery, field, reason)

    @property
    def pickups(self) -> Pickups:
        return self.receiver.pickups

    @property
    def comm_writer(self) -> GroupWriter[CommWrite, dict[str, Any]]:
        return self.groups.writer

    async def aclose(self) -> None:
        """Let the groups being written finish (before the pool closes)."""
        await self.receiver.aclose()
        await self.embedder.aclose()
        await self.groups.aclose()
        await self.parser.aclose()
