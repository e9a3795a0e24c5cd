"""Semantic search over the stored chunks, for people checking what ingestion wrote."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from worker.core.settings import Settings
from worker.db.queries import Q
from worker.embedding import EmbeddingBatcher, make_provider
from worker.text.tokens import count_tokens


async def search(
    settings: Settings, pool: asyncpg.Pool, workspace_id: UUID, text: str, limit: int = 5
) -> list[dict[str, Any]]:
    """Top chunks (transcripts, media, communications) by cosine distance to ``text``."""
    async with EmbeddingBatcher(make_provider(settings), settings) as batcher:
        vector = (await batcher.embed([text], [count_tokens(text)]))[0]
    rows = await pool.fetch(Q.search_chunks, workspace_id, vector, limit)
    return [dict(r) for r in rows]
