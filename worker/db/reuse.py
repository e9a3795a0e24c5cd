"""Vectors a workspace already has, by the hash of the text they embed.

Read by the embed stage before it asks the embedding API for anything: a re-sent or
lightly edited item costs no tokens for the text that did not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg
import numpy as np

from worker.db.queries import CHUNK_TABLES, Q


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
