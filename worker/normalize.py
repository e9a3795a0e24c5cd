"""The pull/normalize and chunk stages: from a validated payload to chunks.

A payload carries its content inline (body, segments, text) or by ``content_url``;
either way this module yields the same shape: for communications one text, for
transcripts and media a sequence of time-ranged segments or plain text, then chunks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from worker.chunking import Chunk, chunk_communication, chunk_segments, chunk_text
from worker.fetch import fetch_text

from worker.payloads import CommunicationPayload, MediaPayload, Segment, TranscriptPayload
from worker.settings import Settings
from worker.transcripts import parse_transcript


@dataclass(frozen=True)
class Pulled:
    """Normalized content of one item, before chunking."""

    text: str | None  # communications, media extracted text, plain transcripts
    segments: list[Segment] | None  # timed transcript / media segments
    fmt: str  # "body" | "segments" | "text" | "vtt" | "srt" | "plain"
    fetched_bytes: int = 0

    @property
    def size(self) -> int:
        if self.text is not None:
            return len(self.text)
        return sum(len(s.text) for s in self.segments or ())


async def pull(
    payload: CommunicationPayload | TranscriptPayload | MediaPayload, settings: Settings
) -> Pulled:
    """Resolve inline or remote content; remote transcripts are parsed into segments."""
    url = payload.content_url
    if isinstance(payload, CommunicationPayload):
        if url:
            body = await fetch_text(url, settings)
            return Pulled(body, None, "body", len(body.encode()))
        return Pulled(payload.body or "", None, "body")
    if payload.segments is not None:
        return Pulled(None, list(payload.segments), "segments")
    if isinstance(payload, MediaPayload) and payload.text is not None:
        return Pulled(payload.text, None, "text")
    assert url is not None  # the payload models guarantee one content source
    raw = await fetch_text(url, settings)
    fmt_hint = payload.content_format
    if isinstance(payload, MediaPayload) and fmt_hint is None and "-->" not in raw[:4096]:
        return Pulled(raw, None, "text", len(raw.encode()))
    segments = list(parse_transcript(raw, fmt_hint))
    detected = fmt_hint or _detect(raw)
    return Pulled(None, segments, detected, len(raw.encode()))


def _detect(raw: str) -> str:
    head = raw.lstrip("\ufeff")[:4096]
    if head.startswith("WEBVTT"):
        return "vtt"
    return "srt" if "-->" in head else "plain"


def chunk(pulled: Pulled, settings: Settings, subject: str | None = None) -> list[Chunk]:
    """Token-aware chunks of the pulled content (speaker turns and time ranges kept)."""
    target, overlap = settings.chunk_tokens, settings.chunk_overlap_tokens
    if pulled.fmt == "body":
        return chunk_communication(subject, pulled.text or "", target, overlap)
    if pulled.segments is not None:
        return list(chunk_segments(pulled.segments, target, overlap))
    return list(chunk_text(pulled.text or "", target, overlap))


def text_hash(*parts: str | None) -> str:
    """Hash of the text that was embedded: the key for reusing an embedding."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update((part or "").encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()
