"""Document bytes to positioned text: the entry point for files and attachments.

``extract_document(data, limits)`` sniffs the type from the bytes (:mod:`.sniff`), checks
the size cap before any parsing, and hands the bytes to one reader:

=========  ==========================  =========================================
type       reader                      positions
=========  ==========================  =========================================
pdf        :mod:`.pdf` (PDFium)        ``{"page": n}``, one section per page
docx       :mod:`.docx` (expat)        ``{}`` then ``{"heading": text}``
pptx       :mod:`.pptx` (expat)        ``{"slide": n}``
xlsx       :mod:`.xlsx` (expat)        ``{"sheet": name}`` (a huge sheet: several)
html       :mod:`.markup` (selectolax) ``{}`` then ``{"heading": text}`` (h1-h3)
markdown   :mod:`.markup`              ``{}`` then ``{"heading": text}``
text       :mod:`.markup`              ``{}``
=========  ==========================  =========================================

Why this split of libraries: bench/documents.py and bench/NOTES.md. Why it never raises:
a hostile file is an outcome to record, not a crash - every path ends in a
:class:`Document` whose ``status`` is ok / partial / skipped and whose ``reason`` holds
only types, counts, cap names and exception class names (it goes into the append-only
event log; no document content). Caps (:class:`Limits`): bytes (skipped, unread), pages /
slides / sheets and characters (partial), zip members / ratio / unzipped bytes (skipped as
a zip bomb). Time and memory are bounded from outside, by the parsing child.
"""

from __future__ import annotations

from collections.abc import Callable

from worker.extract.docx import read_docx
from worker.extract.limits import Limits
from worker.extract.markup import read_html, read_markdown, read_text
from worker.extract.pdf import read_pdf
from worker.extract.pptx import read_pptx
from worker.extract.results import Document
from worker.extract.sections import Sections
from worker.extract.sniff import describe, sniff
from worker.extract.xlsx import read_xlsx
from worker.extract.zipped import Package, Unreadable

Reader = Callable[[bytes, Sections], None]
_ENCRYPTED_OOXML = "EncryptedPackage".encode("utf-16-le")


def extract_document(data: bytes, limits: Limits) -> Document:
    """Never raises (any exception -> status "skipped", reason names the type and the
    exception class, no content)."""
    kind, mime = "other", "application/octet-stream"
    try:
        kind, mime = sniff(data)
        if kind == "other":
            return Document(kind, mime, status="skipped", reason=_not_a_document(data))
        if len(data) > limits.max_document_bytes:
            return Document(
                kind,
                mime,
                status="skipped",
                reason=f"{len(data)} bytes, over {limits.max_document_bytes} (DOCUMENT_MAX_BYTES)",
            )
        out = Sections(limits)
        _READERS[kind](data, out)
        sections = out.close()
    except Unreadable as exc:
        return Document(kind, mime, status="skipped", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - a parser bug on hostile input is an outcome
        return Document(
            kind, mime, status="skipped", reason=f"{kind} parse failed ({type(exc).__name__})"
        )
    if not sections:
        return Document(
            kind, mime, status="skipped", reason="no text", pages=out.pages, title=out.title
        )
    return Document(
        kind,
        mime,
        sections=sections,
        status="partial" if out.notes else "ok",
        reason="; ".join(dict.fromkeys(out.notes)) or None,
        pages=out.pages,
        chars=out.chars,
        title=out.title,
    )


def _not_a_document(data: bytes) -> str:
    """Why ``data`` is not read: what it looks like. A password-protected DOCX/XLSX/PPTX
    is an OLE container holding an ``EncryptedPackage`` stream, so it is said so."""
    label = describe(data)
    if label == "application/x-ole-storage" and _ENCRYPTED_OOXML in data:
        return "encrypted (password-protected Office file)"
    return f"not a document ({label}?)"


def _package(read: Callable[[Package, Sections], None], kind: str) -> Reader:
    """A reader that opens the zip (its checks first) and hands it to ``read``."""
    return lambda data, out: read(Package(data, out.limits, kind), out)


_READERS: dict[str, Reader] = {
    "pdf": read_pdf,
    "docx": _package(read_docx, "docx"),
    "pptx": _package(read_pptx, "pptx"),
    "xlsx": _package(read_xlsx, "xlsx"),
    "html": read_html,
    "markdown": read_markdown,
    "text": read_text,
}
