"""The pull/normalize and chunk stages: from a validated payload to chunks.

A payload carries its content inline (body, segments, text) or by ``content_url``;
either way this module yields the same shape: for communications one text, for
transcripts and media a sequence of time-ranged segments or plain text, then chunks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace

from worker.core.payloads import (
    CommunicationPayload,
    EmailPayload,
    MediaPayload,
    Segment,
    TranscriptPayload,
)
from worker.core.settings import Settings
from worker.extract.results import Document
from worker.ingest.document import PulledAttachment, is_document_head, read_document
from worker.ingest.fetch import FetchError, fetch_parts
from worker.ingest.mail import read_message
from worker.ingest.parsing import Parser
from worker.text.chunking import Chunk, chunk_communication, chunk_segments, chunk_text
from worker.text.html import html_to_text, looks_like_html
from worker.text.quotes import split_reply
from worker.text.sections import chunk_sections
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
    # "body" | "html" | "email" | "segments" | "text" | "vtt" | "srt" | "plain" | a
    # document's type ("pdf", "docx", ...)
    fmt: str
    fetched_bytes: int = 0
    received: str | None = None  # a communication's body as received, when text differs
    document: Document | None = None  # a media item that is a document: its sections
    # A raw e-mail: the communication it is, and its attachments
    communication: CommunicationPayload | None = None
    attachments: tuple[PulledAttachment, ...] = ()
    warnings: tuple[dict[str, object], ...] = ()  # content.warning events' data

    @property
    def size(self) -> int:
        """Characters of content (for lazily parsed segments: those consumed so far)."""
        if self.document is not None:
            return self.document.chars
        if self.text is not None:
            return len(self.text)
        if isinstance(self.segments, LazySegments):
            return self.segments.chars
        return sum(len(s.text) for s in self.segments or ())


async def pull(
    payload: CommunicationPayload | TranscriptPayload | MediaPayload | EmailPayload,
    settings: Settings,
    parser: Parser,
) -> Pulled:
    """Resolve inline or remote content; remote transcripts are parsed into segments, raw
    messages and documents are parsed in a child process (``parser``)."""
    if isinstance(payload, EmailPayload):
        return await _email(payload, settings, parser)
    url = payload.content_url
    if isinstance(payload, CommunicationPayload):
        if url:
            fetched = await fetch_parts(url, settings)
            html = payload.html
            if html is None and fetched.media_type == "text/html":
                html = True
            return await _communication(fetched.text(), html, parser, settings, fetched.nbytes)
        if payload.body_html is not None:
            return await _communication(payload.body_html, True, parser, settings)
        return await _communication(payload.body or "", payload.html, parser, settings)
    if payload.segments is not None:
        return Pulled(None, list(payload.segments), "segments")
    if isinstance(payload, MediaPayload) and payload.text is not None:
        return Pulled(payload.text, None, "text")
    assert url is not None  # the payload models guarantee one content source
    if isinstance(payload, MediaPayload) and payload.asset.kind == "document":
        # read no further than a document may be: a 200 MB file stops at the cap
        cap = settings.document_max_bytes
        try:
            fetched = await fetch_parts(url, settings, max_bytes=cap)
        except FetchError as exc:
            if not exc.too_large:
                raise
            reason = f"over DOCUMENT_MAX_BYTES: content_url {exc.reason}"
            skipped = Document("other", "application/octet-stream", status="skipped", reason=reason)
            return Pulled(None, None, "other", document=skipped)
    else:
        fetched = await fetch_parts(url, settings)
    if isinstance(payload, MediaPayload) and (
        payload.asset.kind == "document" or is_document_head(fetched.head_bytes(1024))
    ):
        nbytes = fetched.nbytes
        document = await read_document(parser, fetched.data(), settings)
        warnings: tuple[dict[str, object], ...] = ()
        if document.status == "partial":
            warnings = ({"type": document.type, "status": "partial", "reason": document.reason},)
        return Pulled(None, None, document.type, nbytes, document=document, warnings=warnings)
    fmt_hint = payload.content_format
    head = fetched.head(4096)
    if isinstance(payload, MediaPayload) and fmt_hint is None and "-->" not in head:
        return Pulled(fetched.text(), None, "text", fetched.nbytes)
    # Parsed lazily from the pieces the body arrived in, as chunking consumes it (each
    # piece is released once parsed); parse errors surface while chunking.
    segments = LazySegments(parse_transcript(fetched.lines(), fmt_hint))
    detected = fmt_hint or _detect(head)
    return Pulled(None, segments, detected, fetched.nbytes)


async def _communication(
    body: str, html: bool | None, parser: Parser, settings: Settings, fetched_bytes: int = 0
) -> Pulled:
    """A communication's body: HTML (said so, or detected when nothing was said) becomes
    its visible text (a large body in the parsing child: never on the event loop), and of
    that only what the message says new (``split_reply``: not the quoted history a reply
    carries again, not the signature) is chunked and embedded; the body as received is
    kept for storage and full-text search."""
    if html is None:
        html = looks_like_html(body)
    if not html:
        text = body
    elif len(body) <= settings.parse_inline_html_chars:
        text = html_to_text(body)
    else:
        text = await parser.html(body)
    new = split_reply(text).new
    fmt = "html" if html else "body"
    return Pulled(new, None, fmt, fetched_bytes, received=body if new != body else None)


async def _email(payload: EmailPayload, settings: Settings, parser: Parser) -> Pulled:
    """A raw message: its communication (the body stored whole, what is new embedded),
    its attachments, and a warning for each part left out."""
    message = await read_message(payload, settings, parser)
    body = message.communication.body or ""
    warnings: list[dict[str, object]] = [{"message": w} for w in message.warnings]
    warnings += [w for a in message.attachments if (w := a.warning()) is not None]
    target, overlap = settings.chunk_tokens, settings.chunk_overlap_tokens
    attachments = [
        replace(a, chunks=tuple(chunk_sections(_sections(a.document), target, overlap)))
        if a.document is not None and a.document.sections
        else a
        for a in message.attachments
    ]
    return Pulled(
        split_reply(body).new,
        None,
        "email",
        message.nbytes,
        received=body,
        communication=message.communication,
        attachments=tuple(attachments),
        warnings=tuple(warnings),
    )


def _sections(document: Document) -> list[tuple[str, Mapping[str, object]]]:
    return [(s.text, s.position) for s in document.sections]


def _detect(raw: str) -> str:
    head = raw.lstrip("\ufeff")[:4096]
    if head.startswith("WEBVTT"):
        return "vtt"
    return "srt" if "-->" in head else "plain"


def iter_chunks(pulled: Pulled, settings: Settings, subject: str | None = None) -> Iterator[Chunk]:
    """Token-aware chunks of the pulled content (speaker turns and time ranges kept),
    produced lazily (a communication's are computed at once: it is one short text)."""
    target, overlap = settings.chunk_tokens, settings.chunk_overlap_tokens
    if pulled.fmt in ("body", "html", "email"):
        return iter(chunk_communication(subject, pulled.text or "", target, overlap))
    if pulled.document is not None:
        return chunk_sections(_sections(pulled.document), target, overlap)
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
