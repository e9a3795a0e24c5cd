"""Chunks of a document whose text comes in placed sections (pages, slides, sheets,
stretches under a heading), each chunk knowing where it is.

Why through ``chunk_segments``: a document's sections pack into chunks exactly as a
transcript's turns do (short pages join, long ones split at paragraphs, with overlap);
the section's index rides in the time fields a segment already has, and comes back as
the span of sections a chunk covers, turned into its ``position``: ``{"page": 3}`` for a
chunk inside page 3, ``{"pages": [3, 4]}`` for one across pages 3 and 4, and likewise
``slide(s)``, ``sheet(s)``, ``heading(s)``. A chunk's times stay empty (a page is not a
moment).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from worker.core.payloads import Segment
from worker.text.chunking import Chunk, chunk_segments

Position = Mapping[str, Any]


def span(first: Position, last: Position) -> dict[str, Any]:
    """Where a chunk from section ``first`` to section ``last`` is."""
    if first == last or not last:
        return dict(first)
    if not first:
        return dict(last)
    if len(first) == len(last) == 1 and first.keys() == last.keys():
        (key,) = first
        return {f"{key}s": [first[key], last[key]]}
    return dict(first)


def chunk_sections(
    sections: Sequence[tuple[str, Position]], target_tokens: int, overlap_tokens: int
) -> Iterator[Chunk]:
    """Chunks of ``(text, position)`` sections, in order, each with its ``position``."""
    segments = (
        Segment.model_construct(speaker=None, start_ms=i, end_ms=i, text=text)
        for i, (text, _) in enumerate(sections)
    )
    for chunk in chunk_segments(segments, target_tokens, overlap_tokens):
        first = sections[chunk.start_ms or 0][1]
        last = sections[chunk.end_ms if chunk.end_ms is not None else 0][1]
        yield replace(chunk, start_ms=None, end_ms=None, position=span(first, last))
