"""Search over the stored chunks through ``public.search_memory`` (migration 006), the
function the platform calls as an ``authenticated`` user: ``cos-worker search`` and the
demo run the same ranking, filters and fallbacks, so what an operator checks here is what
the application gets."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg

from worker.core.settings import Settings
from worker.db.queries import Q

KINDS = ("transcript", "media", "communication")
Mode = Literal["hybrid", "vector", "text"]
MODES: tuple[Mode, ...] = ("hybrid", "vector", "text")


@dataclass(frozen=True)
class Filters:
    """What a search may return: kinds, connector sources, a time range [since, until)
    and a contact who took part (sender, recipient, attendee). ``None``: no restriction."""

    kinds: list[str] | None = None
    sources: list[str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    contact_id: UUID | None = None


async def search(
    settings: Settings,
    pool: asyncpg.Pool,
    workspace_id: UUID,
    text: str,
    limit: int = 5,
    *,
    mode: Mode = "hybrid",
    filters: Filters | None = None,
) -> list[dict[str, Any]]:
    """Top chunks (transcripts, media, communications) for ``text``: by cosine distance of
    its embedding (``vector``), by full-text rank (``text``: no embedding request), or both
    fused by reciprocal rank (``hybrid``)."""
    f = filters or Filters()
    vector = None
    if mode != "text":
        # here, not at import: the CLI reads KINDS/MODES without loading a provider
        from worker.embedding import EmbeddingBatcher, make_provider
        from worker.text.tokens import count_tokens

        async with EmbeddingBatcher(make_provider(settings), settings) as batcher:
            vector = (await batcher.embed([text], [count_tokens(text)]))[0]
    query = text if mode != "vector" else None
    rows = await pool.fetch(
        Q.search_memory,
        workspace_id,
        vector,
        query,
        limit,
        f.kinds,
        f.sources,
        f.since,
        f.until,
        f.contact_id,
    )
    hits = [dict(r) for r in rows]
    for hit in hits:
        if isinstance(hit.get("position"), str):  # jsonb arrives as text
            hit["position"] = json.loads(hit["position"])
    return hits


def describe_place(hit: dict[str, Any]) -> str:
    """Where a hit is, for people: " page 3", " pages 3-4", " slide 2", " sheet Q3"...,
    and for an attachment " in an attachment of 'Subject'"."""
    out = ""
    for key, value in (hit.get("position") or {}).items():
        if isinstance(value, list) and len(value) == 2:
            out += f" {key} {value[0]}-{value[1]}"
        else:
            out += f" {key} {value}"
    if hit.get("came_with"):
        out += f" in an attachment of {hit['came_with']!r}"
    return out


_WORD = re.compile(r"\w{4,}")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


def snippet(content: str, question: str, width: int = 160) -> str:
    """The stretch of a hit that shares most words with the question (a chunk is up to
    ~500 tokens: its opening lines rarely are why it matched), cut to ``width``."""
    wanted = {w.lower() for w in _WORD.findall(question)}
    sentences = [" ".join(s.split()) for s in _SENTENCE.split(content) if s.strip()]
    if not sentences:
        return content[:width]
    best = max(sentences, key=lambda s: len(wanted & {w.lower() for w in _WORD.findall(s)}))
    return best if len(best) <= width else best[: width - 1] + "\u2026"
