"""Windowed writes for large items: embed and COPY a few hundred chunks at a time.

Used by the pipeline's streaming path inside the item's one final transaction, so memory
stays bounded by two windows (one being COPYed, the next being embedded) while the
all-or-nothing guarantee of the short path is kept.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import asyncpg
import numpy as np

from worker.core.settings import Settings
from worker.db.store_stream import ChunkTarget, copy_window, window_vectors
from worker.ingest.embed import ItemEmbedder
from worker.ingest.flow import Flow
from worker.text.chunking import Chunk


@dataclass(slots=True)
class StreamCounts:
    tokens: int = 0
    embedded: int = 0
    embedded_tokens: int = 0


@dataclass(slots=True)
class _Window:
    chunks: list[Chunk]
    vectors: np.ndarray | None  # reused rows filled in; None when nothing was reused
    fresh: list[int]  # rows the batcher is embedding
    task: asyncio.Task[np.ndarray] | None


def chain_release(head: list[Chunk], rest: Iterator[Chunk]) -> Iterator[Chunk]:
    """``head`` then ``rest``, releasing head's chunks as they are consumed."""
    head.reverse()
    while head:
        yield head.pop()
    yield from rest


def _batched(items: Iterable[Chunk], size: int) -> Iterator[list[Chunk]]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


class WindowWriter:
    """Writes one item's chunks window by window; the next window embeds during a COPY."""

    def __init__(self, settings: Settings, embedder: ItemEmbedder) -> None:
        self.settings = settings
        self.embedder = embedder
        self.model = embedder.model

    async def write(
        self, conn: asyncpg.Connection, target: ChunkTarget, chunks: Iterable[Chunk], flow: Flow
    ) -> StreamCounts:
        counts = StreamCounts()
        inflight: set[asyncio.Task[np.ndarray]] = set()
        try:
            pending: _Window | None = None
            for window in _batched(chunks, self.settings.stream_window_chunks):
                prepared = await self._prepare_window(conn, target, window, counts, flow, inflight)
                flow.arrived()  # first window queued (or all reused): stop being waited for
                if pending is not None:
                    await self._write_window(conn, target, pending, inflight)
                pending = prepared
            if pending is not None:
                await self._write_window(conn, target, pending, inflight)
        finally:
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)
        return counts

    async def _prepare_window(
        self,
        conn: asyncpg.Connection,
        target: ChunkTarget,
        window: list[Chunk],
        counts: StreamCounts,
        flow: Flow,
        inflight: set[asyncio.Task[np.ndarray]],
    ) -> _Window:
        """Reusable vectors for a window, and a task embedding the rest."""
        known = await window_vectors(conn, target, self.model, [c.content_hash for c in window])
        out = None
        if known:
            out = np.empty((len(window), self.settings.embedding_dimensions), dtype=np.float32)
        fresh: list[int] = []
        for i, c in enumerate(window):
            counts.tokens += c.token_count
            vector = known.get(c.content_hash)
            if vector is None:
                fresh.append(i)
            else:
                assert out is not None
                out[i] = vector
        del known
        task = None
        if fresh:
            texts, tokens = [window[i].text for i in fresh], [window[i].token_count for i in fresh]
            counts.embedded += len(fresh)
            counts.embedded_tokens += sum(tokens)
            task = asyncio.create_task(self.embedder.embed(texts, tokens, flow))
            inflight.add(task)
        return _Window(window, out, fresh, task)

    async def _write_window(
        self,
        conn: asyncpg.Connection,
        target: ChunkTarget,
        w: _Window,
        inflight: set[asyncio.Task[np.ndarray]],
    ) -> None:
        out = w.vectors
        if w.task is not None:
            vectors = await w.task
            inflight.discard(w.task)
            if out is None:
                out = vectors  # nothing reused: the batcher's array is the window's
            else:
                out[w.fresh] = vectors
        assert out is not None
        await copy_window(conn, target, w.chunks, out, self.model)
