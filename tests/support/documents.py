"""Generated document fixtures: real PDF/DOCX/PPTX/XLSX files written by the libraries
people use to make them (fpdf2, pypdf, python-docx, python-pptx, openpyxl), and the
hostile variants the extractor must survive (10,000 pages, encrypted, truncated,
image-only, zip bombs, a PNG posing as a document).

Used by ``tests/unit/test_documents.py`` and ``bench/documents.py``. The writers are dev
dependencies only; the worker reads these formats without them.
"""

from __future__ import annotations

import datetime as dt
import io
import struct
import zipfile
import zlib
from collections.abc import Sequence


def png(width: int = 64, height: int = 64) -> bytes:
    """A valid grey PNG, written with zlib (no Pillow)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    rows = b"".join(b"\x00" + bytes((x * 4) % 256 for x in range(width)) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def pdf(pages: Sequence[str], title: str | None = None) -> bytes:
    """A PDF with one page per string (fpdf2, Helvetica, wrapped paragraphs)."""
    from fpdf import FPDF

    doc = FPDF()
    doc.set_font("Helvetica", size=11)
    if title:
        doc.set_title(title)
    for text in pages:
        doc.add_page()
        doc.multi_cell(0, 6, text)
    return bytes(doc.output())


def pdf_images(pages: int = 2) -> bytes:
    """A "scanned" PDF: each page holds only an image, no text layer."""
    from fpdf import FPDF

    doc = FPDF()
    image = io.BytesIO(png(200, 280))
    for _ in range(pages):
        doc.add_page()
        doc.image(image, x=10, y=10, w=190)
    return bytes(doc.output())


def pdf_encrypted(pages: Sequence[str], user_password: str, owner_password: str = "owner") -> bytes:
    """``pages`` encrypted by pypdf (RC4-128: no cryptography package needed to write)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf(pages))))
    writer.encrypt(user_password, owner_password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def pdf_many_pages(count: int, text: str = "Tiny page") -> bytes:
    """``count`` pages sharing one content stream and font, written by hand: 10,000 pages
    in ~1 MB and a few milliseconds (a writer library takes seconds)."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(b"%d 0 R" % (5 + i) for i in range(count))
        + b"] /Count %d >>" % count,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
    ]
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 3 0 R >> >> >>"
    objects += [page] * count
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def docx(blocks: Sequence[tuple[str, object]], title: str | None = None) -> bytes:
    """A DOCX from ``("h1"|"h2"|"h3", text)``, ``("p", text)`` and ``("table", rows)``."""
    import docx as python_docx

    doc = python_docx.Document()
    if title:
        doc.core_properties.title = title
    for kind, value in blocks:
        if kind.startswith("h"):
            doc.add_heading(str(value), level=int(kind[1:]))
        elif kind == "p":
            doc.add_paragraph(str(value))
        elif kind == "table":
            rows = list(value)  # type: ignore[call-overload]
            table = doc.add_table(rows=len(rows), cols=len(rows[0]))
            for r, row in enumerate(rows):
                for c, cell in enumerate(row):
                    table.cell(r, c).text = str(cell)
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def pptx(
    slides: Sequence[tuple[str, Sequence[str], Sequence[Sequence[str]] | None]],
    notes: dict[int, str] | None = None,
) -> bytes:
    """A PPTX: per slide a title, body bullet lines and an optional table; ``notes`` by
    slide index (0-based)."""
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    for title, lines, table in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        body = slide.placeholders[1].text_frame
        for i, line in enumerate(lines):
            paragraph = body.paragraphs[0] if i == 0 else body.add_paragraph()
            paragraph.text = line
        if table:
            shape = slide.shapes.add_table(
                len(table), len(table[0]), Inches(1), Inches(4), Inches(6), Inches(2)
            )
            for r, row in enumerate(table):
                for c, cell in enumerate(row):
                    shape.table.cell(r, c).text = cell
    for index, text in (notes or {}).items():
        deck.slides[index].notes_slide.notes_text_frame.text = text
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def xlsx(sheets: dict[str, Sequence[Sequence[object]]]) -> bytes:
    """An XLSX with one sheet per entry (openpyxl; strings are shared, dates styled)."""
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(list(row))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def with_member(document: bytes, name: str, data: bytes) -> bytes:
    """``document`` (a zip) with one more member, deflated."""
    out = io.BytesIO(document)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return out.getvalue()


def replace_member(document: bytes, name: str, data: bytes) -> bytes:
    """``document`` (a zip) with member ``name`` replaced by ``data``."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(document)) as source,
        zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            target.writestr(info.filename, data if info.filename == name else source.read(info))
    return out.getvalue()


def zip_bomb_docx(megabytes: int = 8) -> bytes:
    """A valid DOCX plus ``word/media/bomb.bin``: ``megabytes`` of zeros, ~1000:1."""
    return with_member(
        docx([("p", "Innocent text")]), "word/media/bomb.bin", bytes(megabytes << 20)
    )


def lying_sizes(document: bytes, member: str, declared: int) -> bytes:
    """``document`` with ``member``'s uncompressed size in the central directory (and
    local header) set to ``declared``: a zip whose sizes lie."""
    data = bytearray(document)
    name = member.encode()
    for signature, size_at, name_at in ((b"PK\x01\x02", 24, 46), (b"PK\x03\x04", 22, 30)):
        start = 0
        while (start := data.find(signature, start)) != -1:
            length = struct.unpack_from(
                "<H", data, start + name_at - (18 if signature == b"PK\x01\x02" else 4)
            )[0]
            if data[start + name_at : start + name_at + length] == name:
                struct.pack_into("<I", data, start + size_at, declared)
            start += 4
    return bytes(data)


def realistic_sheet(rows: int, cols: int = 8) -> list[list[object]]:
    """A header row and ``rows`` rows of text, numbers and dates (an export-like sheet)."""
    header: list[object] = ["Region", "Customer", "Amount", "Date"]
    header += [f"Field {c}" for c in range(cols - 4)]
    start = dt.datetime(2026, 1, 1)
    body: list[list[object]] = [
        [
            f"Region {r % 7}",
            f"Customer {r}",
            round(r * 1.25, 2),
            start + dt.timedelta(days=r % 365),
            *(f"value {r}-{c}" for c in range(cols - 4)),
        ]
        for r in range(rows)
    ]
    return [header, *body]


W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
MC = 'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"'


def docx_raw(body: str, styles: str | None = None, prolog: str = "") -> bytes:
    """A minimal DOCX written by hand: ``body`` is the inside of ``w:body`` (for what the
    writer libraries cannot produce: text boxes with fallbacks, localized style ids,
    tracked deletions, broken XML, a DTD in ``prolog``)."""
    parts = {
        "[Content_Types].xml": '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>',
        "word/document.xml": f'<?xml version="1.0" encoding="UTF-8"?>{prolog}<w:document {W} {MC}><w:body>{body}</w:body></w:document>',
    }
    if styles is not None:
        parts["word/styles.xml"] = f'<?xml version="1.0"?><w:styles {W}>{styles}</w:styles>'
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in parts.items():
            archive.writestr(name, text)
    return out.getvalue()


def para(text: str, style: str | None = None) -> str:
    """A ``w:p`` with one run (and a paragraph style id)."""
    props = f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else ""
    return f'<w:p>{props}<w:r><w:t xml:space="preserve">{text}</w:t></w:r></w:p>'
