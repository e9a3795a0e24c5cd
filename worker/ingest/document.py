"""The fetch stage for documents: bytes whose type is sniffed, then read in a parsing
child (``worker.ingest.parsing``) into text with positions.

The type comes from the bytes (``worker.extract.sniff``), never from a file name or a
declared header: connectors pass along what their source claims, and a ``.pdf`` that is
really HTML, or a ``report.docx`` that is a PNG, must be read as what it is (or not at
all, said so). What is not a document is not parsed; what is too large is not read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from worker.core.settings import Settings
from worker.extract.results import Document
from worker.extract.sniff import sniff
from worker.ingest.parsing import Parser
from worker.text.chunking import Chunk

#: Types that are read as documents (sniffed); the rest of what a sniff says is "other".
DOCUMENT_TYPES = frozenset({"pdf", "docx", "pptx", "xlsx", "html", "markdown", "text"})
#: Leading bytes that make a fetched media item a document whatever its asset kind says.
_DOCUMENT_MAGIC = (b"%PDF-", b"PK\x03\x04")


def is_document_head(head: bytes) -> bool:
    """Whether fetched content starting with ``head`` is a binary document (PDF, OOXML)."""
    return head.startswith(_DOCUMENT_MAGIC) or b"%PDF-" in head[:1024]


async def read_document(parser: Parser, data: bytes, settings: Settings) -> Document:
    """The document ``data`` is, read within the caps; never raises for bad input."""
    kind, mime = sniff(data)
    if kind not in DOCUMENT_TYPES:
        return Document(kind, mime, status="skipped", reason=f"not a document ({mime})")
    if len(data) > settings.document_max_bytes:
        return Document(
            kind,
            mime,
            status="skipped",
            reason=f"{len(data)} bytes is over DOCUMENT_MAX_BYTES ({settings.document_max_bytes})",
        )
    document = await parser.document(data)
    if document.type == "other" and document.status == "skipped":
        # killed or crashed in the child: keep what the sniff knew
        return Document(kind, mime, status="skipped", reason=document.reason)
    return document


@dataclass(frozen=True)
class PulledAttachment:
    """One attachment of a message: what its row records, and its document if it is one
    (``None``: not a document, e.g. an image or an archive)."""

    index: int  # 1-based, in the message's order (events name attachments by it)
    filename: str | None
    mime_type: str  # as declared
    size_bytes: int
    sha256: str
    document: Document | None
    chunks: tuple[Chunk, ...] = ()  # the document's, once chunked

    def warning(self) -> dict[str, object] | None:
        """The ``content.warning`` data when its document was not read whole."""
        doc = self.document
        if doc is None or doc.status == "ok":
            return None
        return {
            "attachment": self.index,
            "type": doc.type,
            "status": doc.status,
            "reason": doc.reason,
        }


async def read_attachment(
    parser: Parser,
    index: int,
    filename: str | None,
    mime_type: str,
    data: bytes,
    settings: Settings,
) -> PulledAttachment:
    """An attachment's row data and, when it is a document, its text."""
    sha = hashlib.sha256(data).hexdigest()
    kind, _mime = sniff(data)
    document = await read_document(parser, data, settings) if kind in DOCUMENT_TYPES else None
    return PulledAttachment(index, filename, mime_type, len(data), sha, document)


def document_info(document: Document) -> dict[str, Any]:
    """What reading a document found, for its asset's metadata (no content)."""
    info = {
        "type": document.type,
        "mime_type": document.mime_type,
        "status": document.status,
        "pages": document.pages,
        "chars": document.chars,
    }
    if document.reason:
        info["reason"] = document.reason
    return info
