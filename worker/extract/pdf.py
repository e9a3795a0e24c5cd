"""PDF text per page, with PDFium (pypdfium2).

Why PDFium: on 200 generated pages of wrapped text (bench/documents.py, bench/NOTES.md)
it took 104 ms (113 ms through this module) against pypdf's 539 ms and pdfminer.six's
3,956 ms, all three with every line on its page and in order; it is the engine Chrome
ships, fuzzed continuously, and pypdfium2 is one self-contained wheel (8.9 MB installed,
no Python dependencies). pypdf and pdfminer.six are pure Python (5x and 35x slower);
pdfminer.six also pulls in ``cryptography`` (25 MB with its dependencies).

Outcomes:

* encrypted with a user password: skipped, "encrypted". A file with only an owner
  password (printing/copying restrictions) opens with the empty password and is read:
  the sender could read it, so can the memory; the restriction flags are not DRM here.
* more pages than ``Limits.max_pages``: the first ones are read, partial. Pages are loaded
  one at a time and closed, and a page's text is taken only up to the characters left in
  the document's budget.
* no text at all (every page image-only or blank): skipped, "no text layer (scanned?);
  OCR is not done". Some pages without text that hold images: partial, with the count.
* cut short (no ``%%EOF`` near the end, as a truncated download): PDFium cannot open a
  file without its trailer, so once, a trailer naming the file's catalog is appended and
  the pages that can still be loaded are read (partial); pages that fail are counted.
* anything PDFium refuses otherwise: skipped with its error class.

Not bounded here: PDFium decompresses a page's content streams in C; a flate bomb inside a
PDF is stopped by the parsing child's memory limit and timeout (worker.ingest.parsing).
"""

from __future__ import annotations

import re

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from worker.extract.sections import Sections
from worker.extract.zipped import Unreadable

_CATALOG = re.compile(rb"/Type\s*/Catalog\b")
_OBJECT = re.compile(rb"(\d{1,10})\s+\d{1,5}\s+obj\b")
_ERRORS = {
    pdfium_c.FPDF_ERR_FILE: "file error",
    pdfium_c.FPDF_ERR_FORMAT: "format error",
    pdfium_c.FPDF_ERR_PASSWORD: "password",
    pdfium_c.FPDF_ERR_SECURITY: "unsupported security handler",
}


def read_pdf(data: bytes, out: Sections) -> None:
    """Pages of ``data`` into ``out`` as sections ``{"page": n}`` (1-based)."""
    document, repaired = _open(data)
    try:
        total = len(document)
        out.pages = total
        out.title = _title(document)
        wanted = min(total, out.limits.max_pages)
        failed = imageonly = 0
        for index in range(wanted):
            try:
                text, images, whole = _page_text(document, index, out.limits.max_chars - out.chars)
            except pdfium.PdfiumError:
                failed += 1
                continue
            imageonly += images and not text.strip()
            out.start({"page": index + 1})
            if not out.write(text, sep="\n") or not whole:
                out.cut()
                break
        if repaired:
            out.notes.append("damaged pdf (cut short): trailer rebuilt")
        if failed:
            out.notes.append(f"{failed} of {wanted} pages unreadable")
        if total > wanted:
            out.notes.append(f"read {wanted} of {total} pages (DOCUMENT_MAX_PAGES)")
        if not out.chars and wanted:
            out.notes.clear()
            raise Unreadable("no text layer (scanned?); OCR is not done")
        if imageonly:
            out.notes.append(f"{imageonly} pages have no text layer (OCR is not done)")
    finally:
        document.close()


def _open(data: bytes) -> tuple[pdfium.PdfDocument, bool]:
    try:
        return pdfium.PdfDocument(data), False
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code == pdfium_c.FPDF_ERR_PASSWORD:
            raise Unreadable("encrypted") from None
        repaired = _with_trailer(data) if code == pdfium_c.FPDF_ERR_FORMAT else None
        if repaired is not None:
            try:
                return pdfium.PdfDocument(repaired), True
            except pdfium.PdfiumError:
                pass
        raise Unreadable(f"unreadable pdf ({_ERRORS.get(code, 'PdfiumError')})") from None


def _with_trailer(data: bytes) -> bytes | None:
    """``data`` with a trailer naming its catalog, when it lacks an end (cut short)."""
    if b"%%EOF" in data[-1024:]:
        return None
    catalog = _CATALOG.search(data)
    if catalog is None:
        return None
    objects = list(_OBJECT.finditer(data, max(0, catalog.start() - 4096), catalog.start()))
    if not objects:
        return None
    root = int(objects[-1].group(1))
    return data + b"\ntrailer\n<< /Root %d 0 R >>\n%%%%EOF\n" % root


def _page_text(document: pdfium.PdfDocument, index: int, room: int) -> tuple[str, bool, bool]:
    """A page's text (at most ``room`` + 1 characters, so that a page over the cap is
    seen to be over it), whether it holds images, and whether the text is whole."""
    page = document[index]
    try:
        textpage = page.get_textpage()
        try:
            count = textpage.count_chars()
            take = min(count, max(room, 0) + 1)
            text = textpage.get_text_range(count=take) if take else ""
        finally:
            textpage.close()
        images = False
        if not text.strip():
            images = any(True for _ in page.get_objects([pdfium_c.FPDF_PAGEOBJ_IMAGE], 2))
        return text, images, take == count
    finally:
        page.close()


def _title(document: pdfium.PdfDocument) -> str | None:
    try:
        title = document.get_metadata_value("Title")
    except Exception:  # a broken Info dictionary must not cost the text
        return None
    return " ".join(title.split())[:500] or None
