"""The embed stage of the short path: vectors for an item's chunks, reusing what the
workspace already has.

A vector is only requested for text this workspace has not embedded with this model
before (by content hash): a re-sent or lightly edited item costs no tokens for what did
not change. What is left goes to the shared ``EmbeddingBatcher``. (Streamed items do the
same window by window in ``worker.streaming``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np

from worker import store
from worker.chunking import Chunk, weighted_mean
from worker.embedding import EmbeddingBatcher
from worker.payloads import CommunicationPayload, MediaPayload, TranscriptPayload


@dataclass
class ItemEmbedder:
    pool: asyncpg.Pool
    batcher: EmbeddingBatcher
    model: str
    dimensions: int

    async def communication(self, payload: CommunicationPayload, chunks: list[Chunk],
                            embedded_hash: str, arrived: Any = None,
                            ) -> tuple[np.ndarray | None, list[Chunk]]:  # fmt: skip
        """One vector per communication: its chunks' token-weighted mean, renormalized."""
        if not chunks:
            return None, []
        async with self.pool.acquire() as conn:
            reused = await store.reusable_comm_vector(conn, payload.workspace_id, self.model,
                                                      embedded_hash)  # fmt: skip
        if reused is not None:
            return reused, []
        vectors = await self.batcher.embed(
            [c.text for c in chunks], [c.token_count for c in chunks], arrived=arrived
        )
        if len(chunks) == 1:
            return vectors[0], chunks
        return weighted_mean(vectors, [c.token_count for c in chunks]), chunks

    async def chunks(self, payload: TranscriptPayload | MediaPayload, chunks: list[Chunk],
                     arrived: Any = None) -> tuple[np.ndarray, list[Chunk]]:  # fmt: skip
        """Vectors for every chunk, reusing this workspace's vectors for identical texts."""
        out = np.empty((len(chunks), self.dimensions), dtype=np.float32)
        if not chunks:
            return out, []
        async with self.pool.acquire() as conn:
            known = await store.reusable_chunk_vectors(
                conn, payload.kind, payload.workspace_id, self.model,
                [c.content_hash for c in chunks],
            )  # fmt: skip
        fresh = [c for c in chunks if c.content_hash not in known]
        if fresh:
            vectors = await self.batcher.embed([c.text for c in fresh],
                                               [c.token_count for c in fresh],
                                               arrived=arrived)  # fmt: skip
            for c, v in zip(fresh, vectors, strict=True):
                known[c.content_hash] = v
        for i, c in enumerate(chunks):
            out[i] = known[c.content_hash]
        return out, fresh
