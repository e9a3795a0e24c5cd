"""The embed stage of the short path: vectors for an item's chunks, reusing what the
workspace already has.

A vector is only requested for text this workspace has not embedded with this model
before (by content hash): a re-sent or lightly edited item costs no tokens for what did
not change. What is left goes to the shared ``EmbeddingBatcher``. (Streamed items do the
same window by window in ``worker.ingest.stream``, through ``embed``.)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import numpy as np

from worker.core.payloads import CommunicationPayload
from worker.db import reuse
from worker.embedding import EmbeddingBatcher
from worker.ingest.flow import Flow
from worker.ingest.grouping import GroupWriter
from worker.text.chunking import Chunk, weighted_mean

#: Chunk vectors kept after their request (6 KiB each): an item arriving while another
#: with the same text is still being written reuses it.
RECENT_VECTORS = 512


@dataclass
class ItemEmbedder:
    pool: asyncpg.Pool
    batcher: EmbeddingBatcher
    model: str
    dimensions: int
    lookup_connections: int = 2
    lookup_max_items: int = 100

    def __post_init__(self) -> None:
        # Chunk texts being embedded (pending futures) and the last ``RECENT_VECTORS``
        # embedded (done; ``_recent`` in the order they finished). Each done one holds a
        # copy of its row, not a view of the batcher's array: a view keeps its caller's
        # whole array alive. Eviction used to stop at the oldest entry still pending, so
        # under a tight budget (an item waiting for tokens) nothing was evicted: 7,100
        # entries pinning 76 arrays, 38 MB at a 10M-TPM backfill's peak (issue 21).
        self._in_flight: dict[tuple[UUID, str], asyncio.Future[np.ndarray]] = {}
        self._recent: deque[tuple[UUID, str]] = deque()
        # The items of a page job look their vectors up in the same loop turn: one
        # statement for them all instead of a round trip each.
        self._lookups: GroupWriter[tuple[UUID, str], np.ndarray | None] = GroupWriter(
            self._lookup_many,
            self._lookup_one,
            lambda key: key,
            writers=self.lookup_connections,
            max_items=self.lookup_max_items,
        )

    async def _lookup_one(self, key: tuple[UUID, str]) -> np.ndarray | None:
        async with self.pool.acquire() as conn:
            return await reuse.reusable_comm_vector(conn, key[0], self.model, key[1])

    async def _lookup_many(self, keys: Sequence[tuple[UUID, str]]) -> list[np.ndarray | None]:
        if len(keys) == 1:
            return [await self._lookup_one(keys[0])]
        async with self.pool.acquire() as conn:
            return await reuse.reusable_comm_vectors(conn, keys, self.model)

    async def aclose(self) -> None:
        await self._lookups.aclose()

    async def embed(self, texts: list[str], tokens: list[int], flow: Flow) -> np.ndarray:
        """Vectors for ``texts`` from the shared batcher; the run's ``flow`` hears when its
        rows are queued (the batcher stops lingering for it, the job layer may hand off)."""
        return await self.batcher.embed(texts, tokens, on_queued=flow.queued, live=flow.live)

    async def communication(
        self, payload: CommunicationPayload, chunks: list[Chunk], embedded_hash: str, flow: Flow
    ) -> tuple[np.ndarray | None, list[Chunk]]:
        """One vector per communication: its chunks' token-weighted mean, renormalized.
        An item of a page job (``flow.together``) looks its vector up with its neighbours'."""
        if not chunks:
            return None, []
        key = (payload.workspace_id, embedded_hash)
        reused = await (self._lookups.submit(key) if flow.together else self._lookup_one(key))
        if reused is not None:
            return reused, []
        vectors = await self.embed([c.text for c in chunks], [c.token_count for c in chunks], flow)
        if len(chunks) == 1:
            return vectors[0], chunks
        return weighted_mean(vectors, [c.token_count for c in chunks]), chunks

    async def chunks(
        self, kind: str, workspace_id: UUID, chunks: Sequence[Chunk], flow: Flow
    ) -> tuple[np.ndarray, list[Chunk]]:
        """Vectors for every chunk, reusing the workspace's vectors for identical texts
        (``kind``'s chunk table: a document attached again costs no tokens)."""
        if not chunks:
            return np.empty((0, self.dimensions), dtype=np.float32), []
        async with self.pool.acquire() as conn:
            known = await reuse.reusable_chunk_vectors(
                conn,
                kind,
                workspace_id,
                self.model,
                [c.content_hash for c in chunks],
            )
        # Texts another item of the workspace is embedding right now, or embedded moments
        # ago and may not have committed yet (the same document attached to several
        # messages of a thread arriving together), are taken from it, not requested again:
        # the database only knows vectors once they are committed.
        fresh: dict[str, Chunk] = {}
        waiting: dict[str, asyncio.Future[np.ndarray]] = {}
        for c in chunks:
            chash = c.content_hash
            if chash in known or chash in waiting or chash in fresh:
                continue
            if (future := self._in_flight.get((workspace_id, chash))) is not None:
                waiting[chash] = future
            else:
                fresh[chash] = c
        owned = {
            c.content_hash: self._in_flight.setdefault(
                (workspace_id, c.content_hash), asyncio.get_running_loop().create_future()
            )
            for c in fresh.values()
        }
        try:
            if fresh:
                new = list(fresh.values())
                vectors = await self.embed(
                    [c.text for c in new], [c.token_count for c in new], flow
                )
                for c, v in zip(new, vectors, strict=True):
                    known[c.content_hash] = v
                    owned[c.content_hash].set_result(v.copy())
                    self._recent.append((workspace_id, c.content_hash))
        except BaseException as exc:
            for chash, future in owned.items():
                self._in_flight.pop((workspace_id, chash), None)
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: no "never retrieved" warning if unwaited
            raise
        while len(self._recent) > RECENT_VECTORS:  # oldest first; those in flight stay
            key = self._recent.popleft()
            if (done := self._in_flight.get(key)) is not None and done.done():
                del self._in_flight[key]
        if len(fresh) == len(chunks):
            # Every chunk new and distinct (a first ingest): the batcher's rows are the
            # answer, in order. A copy of them was a second copy of every vector in flight.
            return vectors, new
        for chash, future in waiting.items():
            known[chash] = await future
        out = np.empty((len(chunks), self.dimensions), dtype=np.float32)
        for i, c in enumerate(chunks):
            out[i] = known[c.content_hash]
        return out, list(fresh.values())
