"""What a document is, from its bytes alone.

Why not the file name or the declared ``Content-Type``: both come from the sender and lie
(a ``.docx`` that is a PNG, ``application/octet-stream`` on every attachment of some
mailers). The bytes decide; the declared type is only ever shown next to the verdict.

Rules, in order (each looks at a bounded prefix or the zip directory, never the whole file):

* ``%PDF-`` within the first 1,024 bytes (Acrobat accepts leading junk): pdf;
* a zip whose central directory names ``word/document.xml`` / ``ppt/presentation.xml`` /
  ``xl/workbook.xml``: docx / pptx / xlsx (macro-enabled variants too: same parts); any
  other zip is "other" (nothing is decompressed to find out);
* known binary signatures (images, OLE - legacy ``.doc``/``.xls``/``.ppt`` and *encrypted*
  Office files, which are OLE containers -, executables, archives, RTF): other;
* text - a BOM, or the first 64 KiB decode as UTF-8 (or cp1252) with under 1 % control
  characters - then: html if :func:`worker.text.html.looks_like_html` says so, markdown if
  it has Markdown structure (an ATX heading, a fence, a setext underline or a link), else
  text.
"""

from __future__ import annotations

import codecs
import re

from worker.extract.zipped import zip_members
from worker.text.html import looks_like_html

MIMES = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "html": "text/html",
    "markdown": "text/markdown",
    "text": "text/plain",
    "other": "application/octet-stream",
}
_PARTS = (
    (b"word/document.xml", "docx"),
    (b"ppt/presentation.xml", "pptx"),
    (b"xl/workbook.xml", "xlsx"),
)
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"\x00\x00\x01\x00", "image/x-icon"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
    (b"{\\rtf", "application/rtf"),
    (b"MZ", "application/x-msdownload"),
    (b"\x7fELF", "application/x-executable"),
    (b"\x1f\x8b", "application/gzip"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"%!PS", "application/postscript"),
)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
SAMPLE = 64 * 1024
_BOM_PREFIXES = tuple(bom for bom, _ in _BOMS)
_UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)
_CONTROL = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f\ufffd]")
_MARKDOWN = re.compile(
    r"^ {0,3}(?:#{1,6}[ \t]+\S|```|~~~|(?:=+|-{2,})[ \t]*$)|\[[^\]\n]+\]\([^)\s]+\)", re.M
)


def sniff(data: bytes) -> tuple[str, str]:
    """(type, mime) from the bytes, never from a name or a declared header (module doc)."""
    kind = _binary_kind(data)
    if kind is None:
        kind = _text_kind(decode(data[:SAMPLE])) if looks_textual(data) else "other"
    return kind, MIMES[kind]


def describe(data: bytes) -> str:
    """A label for what a non-document is (``image/png``, ``application/zip``, ...): for
    reasons, which must hold no content."""
    if not data:
        return "empty"
    for signature, label in _SIGNATURES:
        if data.startswith(signature):
            return label
    if data[8:12] == b"WEBP" and data.startswith(b"RIFF"):
        return "image/webp"
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "application/zip"
    return "application/octet-stream"


def decode(data: bytes) -> str:
    """``data`` as text: by its BOM; else UTF-8 (with U+FFFD for stray bytes when valid
    multi-byte sequences outnumber them, so one bad byte does not turn a UTF-8 file into
    mojibake); else cp1252, the usual 8-bit encoding of Western mail and Office exports."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return data.decode(codec, "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", "replace")
        if len(_UTF8_SEQUENCE.findall(data)) > text.count("\ufffd"):
            return text
        return data.decode("cp1252", "replace")


def looks_textual(data: bytes) -> bool:
    """Whether the first 64 KiB decode to text with under 1 % control characters (a
    multi-byte sequence cut at the end of the sample is not an error)."""
    head = data[:SAMPLE]
    if len(data) > SAMPLE and not head.startswith(_BOM_PREFIXES):
        head = head[: len(head) - _cut_sequence(head)]
    text = decode(head)
    return len(_CONTROL.findall(text)) * 100 < max(len(text), 1)


def _cut_sequence(head: bytes) -> int:
    """Bytes at the end of ``head`` that start a UTF-8 sequence it cuts short."""
    for back in range(1, min(4, len(head)) + 1):
        byte = head[-back]
        if byte < 0x80:
            return 0
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return back if need > back else 0
    return 0


def _binary_kind(data: bytes) -> str | None:
    if not data:
        return "other"
    if b"%PDF-" in data[:1024]:
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        found = zip_members(data)
        names = set(found[0]) if found else set()
        return next((kind for part, kind in _PARTS if part in names), "other")
    strong = any(data.startswith(sig) for sig, _ in _SIGNATURES if len(sig) >= 4)
    return "other" if strong or describe(data) in ("image/webp", "application/zip") else None


def _text_kind(head: str) -> str:
    if looks_like_html(head):
        return "html"
    return "markdown" if _MARKDOWN.search(head) else "text"
