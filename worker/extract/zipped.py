"""Reading OOXML packages (DOCX, PPTX, XLSX: XML parts in a zip) without trusting them.

Why our own reader rather than python-docx / python-pptx / openpyxl: an OOXML file is just
XML in a zip, and the text lives in a handful of elements; the stdlib reader measured
2-3x faster than those three with the same text (bench/documents.py, bench/NOTES.md),
needs no lxml, keeps memory flat (streaming, no tree), and puts the zip checks where they
must be: *before* anything is decompressed.

Bounds, in order:

1. the central directory is scanned by hand (:func:`zip_members`): more than
   :data:`MAX_MEMBERS` entries and the file is not opened (``zipfile`` builds an object per
   entry, so a 25 MB directory of empty names would cost hundreds of MB);
2. the declared sizes (:meth:`Package.check`): a member expanding more than
   ``Limits.max_zip_ratio`` times its compressed size and past 1 MiB, or all members
   together past ``Limits.max_unzipped_bytes``, is a zip bomb: nothing is decompressed;
3. the actual bytes (:meth:`Package.chunks`): declared sizes can lie, so every member is
   read in 64 KiB pieces against the same budget (``zipfile`` also stops at the declared
   size and fails the CRC check when a member is longer); the budget is shared by all
   members read, so a reader cannot go past it by reading many parts.

XML is parsed with expat directly (:meth:`Package.parse`), streaming, without building a
tree: an OOXML part never has a DTD, so one is refused outright (no entity expansion at
all). Names are matched without their prefix (``w:t`` -> ``t``) and without namespace
processing, which cost a third of the parse time on a 350 KB ``styles.xml`` (the
transitional and strict OOXML namespaces differ anyway; the local names do not).
"""

from __future__ import annotations

import io
import posixpath
import struct
import zipfile
from collections.abc import Callable, Iterator
from xml.parsers import expat

from worker.extract.limits import MIB, Limits

#: Zip entries looked at; a package with more is skipped (a large deck has a few thousand).
MAX_MEMBERS = 20_000
CHUNK = 64 * 1024
_EOCD, _EOCD64, _EOCD64_LOCATOR = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"
_CENTRAL = b"PK\x01\x02"


class Unreadable(Exception):
    """A recorded outcome, not a crash: ``str(exc)`` is the reason (no content)."""


class ZipBomb(Unreadable):
    pass


def zip_members(data: bytes, limit: int = MAX_MEMBERS) -> tuple[list[bytes], int] | None:
    """Names of the first ``limit`` central directory entries and how many entries there
    are (counting stops at ``limit + 1``); None when there is no readable directory."""
    end = data.rfind(_EOCD, max(0, len(data) - 65_557))
    if end < 0 or end + 22 > len(data):
        return None
    size, offset = struct.unpack_from("<II", data, end + 12)
    start = end - size
    record = end - 20 - 56  # a zip64 end record and its locator precede the end record
    if (
        0xFFFFFFFF in (size, offset)
        and record >= 0
        and data[end - 20 : end - 16] == _EOCD64_LOCATOR
        and data[record : record + 4] == _EOCD64
    ):
        size = struct.unpack_from("<Q", data, record + 40)[0]
        start = record - size
    if start < 0:
        return None
    names: list[bytes] = []
    count, at, stop = 0, start, min(start + size, len(data))
    while at + 46 <= stop and data[at : at + 4] == _CENTRAL and count <= limit:
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, at + 28)
        if count < limit:
            names.append(data[at + 46 : at + 46 + name_len])
        count += 1
        at += 46 + name_len + extra_len + comment_len
    return names, count


class Package:
    """An OOXML zip whose directory passed the checks; members read within the budget."""

    def __init__(self, data: bytes, limits: Limits, kind: str) -> None:
        found = zip_members(data)
        if found is None:
            raise Unreadable(f"{kind}: no zip directory")
        if found[1] > MAX_MEMBERS:
            raise ZipBomb(f"zip bomb: over {MAX_MEMBERS} zip members")
        self.kind = kind
        self.limits = limits
        self.zip = zipfile.ZipFile(io.BytesIO(data))
        self.members = {info.filename: info for info in self.zip.infolist()}
        self.budget = limits.max_unzipped_bytes
        self.check()

    def check(self) -> None:
        """Reject a zip bomb from the declared sizes, before anything is decompressed."""
        ratio = self.limits.max_zip_ratio
        total = 0
        for info in self.members.values():
            total += info.file_size
            if info.file_size > MIB and info.file_size > ratio * max(info.compress_size, 1):
                expands = info.file_size // max(info.compress_size, 1)
                raise ZipBomb(
                    f"zip bomb: a member expands {expands}x to {info.file_size} bytes "
                    f"(over {ratio}x)"
                )
        if total > self.limits.max_unzipped_bytes:
            raise ZipBomb(
                f"zip bomb: members expand to {total} bytes, over "
                f"{self.limits.max_unzipped_bytes} (DOCUMENT_MAX_UNZIPPED_BYTES)"
            )

    def has(self, name: str) -> bool:
        return name in self.members

    def chunks(self, name: str) -> Iterator[bytes]:
        """``name``'s bytes in pieces, counted against the package's budget."""
        info = self.members[name]
        ceiling = max(MIB, self.limits.max_zip_ratio * max(info.compress_size, 1))
        seen = 0
        with self.zip.open(info) as member:
            while piece := member.read(CHUNK):
                seen += len(piece)
                self.budget -= len(piece)
                if self.budget < 0:
                    raise ZipBomb(
                        "zip bomb: members expand past "
                        f"{self.limits.max_unzipped_bytes} bytes (DOCUMENT_MAX_UNZIPPED_BYTES)"
                    )
                if seen > ceiling:
                    raise ZipBomb(f"zip bomb: a member expands over {self.limits.max_zip_ratio}x")
                yield piece

    def parse(self, name: str, reader: XmlReader) -> None:
        """Stream ``name`` through ``reader`` (stops early when ``reader.done`` is set)."""
        parser = reader.parser()
        for piece in self.chunks(name):
            parser.Parse(piece, False)
            if reader.done:
                return
        parser.Parse(b"", True)

    def relations(self, part: str) -> dict[str, tuple[str, str]]:
        """``part``'s relationships: id -> (type's last segment, target member name)."""
        folder, base = posixpath.split(part)
        rels = posixpath.join(folder, "_rels", base + ".rels")
        found: dict[str, tuple[str, str]] = {}
        if not self.has(rels):
            return found

        def start(name: str, attrs: dict[str, str]) -> None:
            if local(name) == "Relationship" and attrs.get("TargetMode") != "External":
                target = attrs.get("Target", "")
                path = target[1:] if target.startswith("/") else posixpath.join(folder, target)
                kind = attrs.get("Type", "").rsplit("/", 1)[-1]
                found[attrs.get("Id", "")] = (kind, posixpath.normpath(path))

        self.parse(rels, XmlReader(start))
        return found

    def title(self) -> str | None:
        """The ``dc:title`` of ``docProps/core.xml``, when set."""
        if not self.has("docProps/core.xml"):
            return None
        reader = TextOf("title")
        self.parse("docProps/core.xml", reader)
        return " ".join("".join(reader.parts).split())[:500] or None


def local(name: str) -> str:
    """An element or attribute name without its prefix (``w:p`` -> ``p``)."""
    return name.rpartition(":")[2]


def relation_id(attrs: dict[str, str]) -> str:
    """The relationship id of an element (``r:id``; a plain ``id`` is something else)."""
    for key, value in attrs.items():
        if ":" in key and local(key) == "id":
            return value
    return ""


def attr(attrs: dict[str, str], name: str) -> str | None:
    """An attribute by local name, whatever its namespace."""
    for key, value in attrs.items():
        if local(key) == name:
            return value
    return None


class XmlReader:
    """Handlers for one streamed part; ``done`` stops the parse early."""

    def __init__(
        self,
        start: Callable[[str, dict[str, str]], None] | None = None,
        end: Callable[[str], None] | None = None,
        text: Callable[[str], None] | None = None,
    ) -> None:
        self.done = False
        self._start, self._end, self._text = start, end, text
        self.cap = 1 << 62  # characters a reader may hold unwritten (see ``keep``)
        self.held = 0

    def keep(self, parts: list[str], data: str) -> None:
        """Buffer ``data`` unless ``cap`` characters are already held unwritten: one
        giant paragraph or cell cannot hold more than the document's character cap
        (what is dropped would be cut by the cap anyway). Readers reset ``held``."""
        if self.held <= self.cap:
            parts.append(data)
            self.held += len(data)

    def parser(self) -> expat.XMLParserType:
        parser = expat.ParserCreate()
        parser.buffer_text = True
        parser.buffer_size = CHUNK
        parser.StartDoctypeDeclHandler = _no_dtd
        parser.EntityDeclHandler = _no_dtd
        # Only the handlers a reader has: a callback per element is most of the cost.
        kind = type(self)
        if self._start or kind.start is not XmlReader.start:
            parser.StartElementHandler = self._start or self.start
        if self._end or kind.end is not XmlReader.end:
            parser.EndElementHandler = self._end or self.end
        if self._text or kind.text is not XmlReader.text:
            parser.CharacterDataHandler = self._text or self.text
        return parser

    def start(self, name: str, attrs: dict[str, str]) -> None:
        pass

    def end(self, name: str) -> None:
        pass

    def text(self, data: str) -> None:
        pass


class TextOf(XmlReader):
    """The character data inside elements with one local name."""

    def __init__(self, element: str) -> None:
        super().__init__()
        self.element = element
        self.inside = 0
        self.parts: list[str] = []

    def start(self, name: str, attrs: dict[str, str]) -> None:
        self.inside += local(name) == self.element

    def end(self, name: str) -> None:
        self.inside -= local(name) == self.element

    def text(self, data: str) -> None:
        if self.inside:
            self.parts.append(data)


def _no_dtd(*_args: object) -> None:
    raise Unreadable("xml with a DTD (refused: OOXML parts never have one)")
