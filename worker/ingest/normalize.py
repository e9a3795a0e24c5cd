"""The pull/normalize and chunk stages: from a validated payload to chunks.

A payload carries its content inline (body, segments, text) or by ``content_url``;
either way this module yields the same shape: for communications one text, for
transcripts and media a sequence of time-ranged segments or plain text, then chunks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from worker.core.payloads import CommunicationPayload, MediaPayload, Segment, TranscriptPayload
from worker.core.settings import Settings
from worker.ingest.fetch import fetch_parts
from worker.text.chunking import Chunk, chunk_communication, chunk_segments, chunk_text
from worker.text.html import html_to_text, looks_like_html
from worker.text.quotes import split_reply
from worker.text.transcripts import parse_transcript


class LazySegments:
    """Segments parsed lazily from fetched text (never all held at once); counts the
    characters of the segments consumed so far."""

    def __init__(self, segments: Iterable[Segment]) -> None:
        self._segments = segments
        self.chars = 0

    def __iter__(self) -> Iterator[Segment]:
        for segment in self._segments:
            self.chars += len(segment.text)
            yield segment


@dataclass(frozen=True)
class Pulled:
    """Normalized content of one item, before chunking."""

    text: str | None  # communications, media extracted text, plain transcripts
    segments: list[Segment] | LazySegments | None  # timed transcript / media segments
    fmt: str  # "body" | "html" | "segments" | "text" | "vtt" | "srt" | "plain"
    fetched_bytes: int = 0
    received: str | None = None  # a communication's body as received, when text differs

    @property
    def size(self) -> int:
        """Characters of content (for lazily parsed segments: those consumed so far)."""
        if self.text is not None:
            return len(self.text)
        if isinstance(self.segments, LazySegments):
            return self.segments.chars
        return sum(len(s.text) for s in self.segments or ())


async def pull(
    payload: CommunicationPayload | TranscriptPayload | MediaPayload, settings: Settings
) -> Pulled:
    """Resolve inline or remote content; remote transcripts are parsed into segments."""
    url = payload.content_url
    if isinstance(payload, CommunicationPayload):
        if url:
            fetched = await fetch_parts(url, settings)
            html = payload.html
            if html is None and fetched.media_type == "text/html":
                html = True
            return _communication(fetched.text(), html, fetched.nbytes)
        if payload.body_html is not None:
            return _communication(payload.body_html, True)
        return _communication(payload.body or "", payload.html)
    if payload.segments is not None:
        return Pulled(None, list(payload.segments), "segments")
    if isinstance(payload, MediaPayload) and payload.text is not None:
        return Pulled(payload.text, None, "text")
    assert url is not None  # the payload models guarantee one content source
    fetched = await fetch_parts(url, settings)
    fmt_hint = payload.content_format
    head = fetched.head(4096)
    if isinstance(payload, MediaPayload) and fmt_hint is None and "-->" not in head:
        return Pulled(fetched.text(), None, "text", fetched.nbytes)
    # Parsed lazily from the pieces the body arrived in, as chunking consumes it (each
    # piece is released once parsed); parse errors surface while chunking.
    segments = LazySegments(parse_transcript(fetched.lines(), fmt_hint))
    detected = fmt_hint or _detect(head)
    return Pulled(None, segments, detected, fetched.nbytes)


def _communication(body: str, html: bool | None, fetched_bytes: int = 0) -> Pulled:
    """A communication's body: HTML (said so, or detected when nothing was said) becomes
    its visible text, and of that only what the message says new (``split_reply``: not the
    quoted history a reply carries again, not the signature) is chunked and embedded; the
    body as received is kept for storage and full-text search."""
    if html is None:
        html = looks_like_html(body)
    text = html_to_text(body) if html else body
    new = split_reply(text).new
    fmt = "html" if html else "body"
    return Pulled(new, None, fmt, fetched_bytes, received=body if new != body else None)


def _detect(raw: str) -> str:
    head = raw.lstrip("\ufeff")[:4096]
    if head.startswith("WEBVTT"):
        return "vtt"
    return "srt" if "-->" in head else "plain"


def iter_chunks(pulled: Pulled, settings: Settings, subject: str | None = None) -> Iterator[Chunk]:
    """Token-aware chunks of the pulled content (speaker turns and time ranges kept),
    produced lazily (a communication's are computed at once: it is one short text)."""
    target, overlap = settings.chunk_tokens, settings.chunk_overlap_tokens
    if pulled.fmt in ("body", "html"):
        return iter(chunk_communication(subject, pulled.text or "", target, overlap))
    if pulled.segments is not None:
        return chunk_segments(pulled.segments, target, overlap)
    return chunk_text(pulled.text or "", target, overlap)


def chunk(pulled: Pulled, settings: Settings, subject: str | None = None) -> list[Chunk]:
    """All chunks of the pulled content at once (see :func:`iter_chunks`)."""
    return list(iter_chunks(pulled, settings, subject))


def text_hash(*parts: str | None) -> str:
    """Hash of the text that was embedded: the key for reusing an embedding."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update((part or "").encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()
