"""``embed_pending``: embeddings for contact profiles and insights.

Contacts are created by ingestion without an embedding (a profile is only worth
embedding once the name is known, and one batch for many contacts is cheaper than one
per message); insights are written by other services. Rows whose embedding is missing
or came from another model are embedded in keyset-paginated batches, each committed on
its own, so a run interrupted half-way resumes where it stopped and a model change
re-embeds everything without a special migration.
"""

from __future__ import annotations

import hashlib
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np
import structlog

from worker.core.settings import MAX_INPUT_TOKENS
from worker.db.queries import Q
from worker.embedding import EmbeddingBatcher
from worker.text.tokens import get_encoding

log = structlog.get_logger("worker.db.backfill")
_ZERO = UUID(int=0)


def contact_profile(row: asyncpg.Record | dict[str, Any]) -> str:
    """The text that represents a contact for semantic search."""
    parts = [row["display_name"] or "", f"<{row['primary_address']}>"]
    others = [a for a in (row["addresses"] or []) if a != row["primary_address"]]
    if others:
        parts.append("also " + ", ".join(others))
    for label in ("title", "organization"):
        if row[label]:
            parts.append(f"{label}: {row[label]}")
    if row["notes"]:
        parts.append(row["notes"])
    return "; ".join(p for p in parts if p)


def _truncate(texts: list[str]) -> tuple[list[str], list[int]]:
    """Cut each text to the model's input limit; returns texts and token counts."""
    enc = get_encoding()
    out, counts = [], []
    for text in texts:
        tokens = enc.encode(text, disallowed_special=())
        if len(tokens) > MAX_INPUT_TOKENS:
            tokens = tokens[:MAX_INPUT_TOKENS]
            text = enc.decode(tokens)
        out.append(text or " ")
        counts.append(max(1, len(tokens)))
    return out, counts


async def _embed(batcher: EmbeddingBatcher, texts: list[str]) -> np.ndarray:
    cut, counts = _truncate(texts)
    return await batcher.embed(cut, counts)


async def embed_pending(
    pool: asyncpg.Pool, batcher: EmbeddingBatcher, model: str, batch_size: int
) -> dict[str, int]:
    """Embed every contact and insight lacking a current-model embedding."""
    done = {"contacts": 0, "insights": 0}
    after = _ZERO
    while True:
        rows = await pool.fetch(Q.pending_contacts, model, after, batch_size)
        if not rows:
            break
        profiles = [contact_profile(r) for r in rows]
        vectors = await _embed(batcher, profiles)
        hashes = [hashlib.sha256(p.encode()).hexdigest() for p in profiles]
        await pool.executemany(
            Q.set_contact_embedding,
            [(r["id"], model, v, h) for r, v, h in zip(rows, vectors, hashes, strict=True)],
        )
        done["contacts"] += len(rows)
        after = rows[-1]["id"]
        log.info("embed_pending.batch", table="core.contacts", rows=len(rows))
    after = _ZERO
    while True:
        rows = await pool.fetch(Q.pending_insights, model, after, batch_size)
        if not rows:
            break
        texts = [f"{r['title']}\n{r['body']}" for r in rows]
        vectors = await _embed(batcher, texts)
        await pool.executemany(
            Q.set_insight_embedding,
            [(r["id"], model, v) for r, v in zip(rows, vectors, strict=True)],
        )
        done["insights"] += len(rows)
        after = rows[-1]["id"]
        log.info("embed_pending.batch", table="intel.insights", rows=len(rows))
    return done
