"""XLSX text per sheet, from the worksheet parts streamed with expat.

Why not openpyxl or python-calamine (bench/NOTES.md, 30,000 rows x 4 columns): this
reader took 1.16 s, openpyxl's read-only mode 3.27 s; calamine (Rust) 0.29 s, but it
materializes the whole sheet (+16 MB RSS here against 1.3 MB, growing with the sheet: a
25 MB file would approach the parsing child's memory limit) and decompresses in its own
zip reader, out of reach of the actual-bytes budget of :mod:`worker.extract.zipped`. The
character cap stops a text-heavy sheet early (2 M characters: ~50,000 rows); the worst
case is a sheet of empty styled cells, which has no text to cap: 40 MB of them took
4.4 s, within the parse timeout.

What is read: the worksheets listed in ``xl/workbook.xml``, in tab order (hidden ones too:
their content is in the file), at most ``Limits.max_pages``. A row becomes one line of
cell values joined by `` | `` (gaps of up to 50 empty cells kept, so columns stay
aligned; trailing empty cells dropped); empty rows are skipped. Values as Excel shows
them, roughly: shared and inline strings, numbers without float noise, ``TRUE``/``FALSE``,
error codes, and serial numbers in a date/time format as ISO dates (1900 and 1904 date
systems). Formulas are not evaluated: their cached value is read. A huge sheet becomes
several sections with the same ``{"sheet": name}`` position.
"""

from __future__ import annotations

import datetime as dt
import re

from worker.extract.sections import Sections
from worker.extract.zipped import Package, XmlReader, attr, local, relation_id

WORKBOOK, SHARED, STYLES = "xl/workbook.xml", "xl/sharedStrings.xml", "xl/styles.xml"
#: Shared strings kept; past this the rest read as empty (noted).
MAX_SHARED_STRINGS = 2_000_000
MAX_GAP = 50
BATCH = 200  # rows written to the sections at a time
_DATE_IDS = frozenset([*range(14, 23), *range(27, 37), *range(45, 48), *range(50, 59)])
_NOT_DATE = re.compile(r'"[^"]*"|\[[^\]]*\]|\\.|_.|\*.')
_DATE_CODE = re.compile(r"[dmyhs]", re.I)
_COLUMN = re.compile(r"[A-Z]{1,3}")


def read_xlsx(package: Package, out: Sections) -> None:
    """Worksheets into ``out`` as sections ``{"sheet": name}``."""
    out.title = package.title()
    relations = package.relations(WORKBOOK)
    sheets: list[tuple[str, str]] = []
    system = {"1904": False}

    def start(name: str, attrs: dict[str, str]) -> None:
        tag = local(name)
        if tag == "sheet":
            kind, path = relations.get(relation_id(attrs), ("", ""))
            if kind == "worksheet" and package.has(path):
                sheets.append((attrs.get("name", "")[:200], path))
        elif tag == "workbookPr":
            system["1904"] = (attr(attrs, "date1904") or "") in ("1", "true")

    package.parse(WORKBOOK, XmlReader(start))
    out.pages = len(sheets)
    wanted = min(len(sheets), out.limits.max_pages)
    strings = _shared_strings(package, out) if package.has(SHARED) else []
    dates = _date_styles(package) if package.has(STYLES) else frozenset()
    epoch = dt.datetime(1904, 1, 1) if system["1904"] else dt.datetime(1899, 12, 30)
    for name, path in sheets[:wanted]:
        out.start({"sheet": name})
        package.parse(path, _Sheet(out, strings, dates, epoch))
        if out.full:
            break
    if len(sheets) > wanted:
        out.notes.append(f"read {wanted} of {len(sheets)} sheets (DOCUMENT_MAX_PAGES)")


def _shared_strings(package: Package, out: Sections) -> list[str]:
    strings: list[str] = []
    reader = _Strings(strings, out.limits.max_chars)
    package.parse(SHARED, reader)
    if reader.done:
        out.notes.append(f"shared strings cut at {MAX_SHARED_STRINGS}")
    return strings


class _Strings(XmlReader):
    """``si`` items: their ``t`` text, without phonetic runs (``rPh``)."""

    def __init__(self, strings: list[str], cap: int) -> None:
        super().__init__()
        self.cap = cap
        self.strings = strings
        self.parts: list[str] = []
        self.in_text = False
        self.phonetic = 0

    def start(self, name: str, attrs: dict[str, str]) -> None:
        tag = local(name)
        self.in_text = tag == "t" and not self.phonetic
        self.phonetic += tag == "rPh"

    def end(self, name: str) -> None:
        tag = local(name)
        self.in_text = False
        self.phonetic -= tag == "rPh"
        if tag == "si":
            self.strings.append("".join(self.parts))
            self.parts, self.held = [], 0
            self.done = len(self.strings) >= MAX_SHARED_STRINGS

    def text(self, data: str) -> None:
        if self.in_text:
            self.keep(self.parts, data)


def _date_styles(package: Package) -> frozenset[int]:
    """Indexes of cell formats (``cellXfs``) that show a number as a date or time."""
    codes: dict[int, str] = {}
    formats: list[int] = []
    inside = [False]

    def start(name: str, attrs: dict[str, str]) -> None:
        tag = local(name)
        if tag == "numFmt":
            codes[_int(attrs.get("numFmtId"))] = attrs.get("formatCode", "")
        elif tag == "cellXfs":
            inside[0] = True
        elif tag == "xf" and inside[0]:
            formats.append(_int(attrs.get("numFmtId")))

    def end(name: str) -> None:
        if local(name) == "cellXfs":
            inside[0] = False

    package.parse(STYLES, XmlReader(start, end))
    dated = {
        fid
        for fid in set(formats)
        if fid in _DATE_IDS or (fid in codes and _DATE_CODE.search(_NOT_DATE.sub("", codes[fid])))
    }
    return frozenset(i for i, fid in enumerate(formats) if fid in dated)


class _Sheet(XmlReader):
    def __init__(
        self, out: Sections, strings: list[str], dates: frozenset[int], epoch: dt.datetime
    ) -> None:
        super().__init__()
        self.out, self.strings, self.dates, self.epoch = out, strings, dates, epoch
        self.row: list[str] = []
        self.value: list[str] | None = None
        self.cell: tuple[str, str | None, str] = ("n", None, "")  # type, style, reference
        self.phonetic = 0
        self.capture = False  # inside <v>, or <t> of an inline string (not <f>)
        self.lines: list[str] = []  # rows not yet written (written in batches: fewer passes)
        self.names: dict[str, str] = {}  # element name -> local name
        self.cap = out.limits.max_chars
        self.pending = 0  # characters in ``lines``

    def start(self, name: str, attrs: dict[str, str]) -> None:
        tag = self.names.get(name) or self.names.setdefault(name, local(name))
        if tag == "v" or tag == "t":
            self.capture = not self.phonetic
        elif tag == "c":
            self.cell = (attrs.get("t", "n"), attrs.get("s"), attrs.get("r", ""))
            self.value = []
        elif tag == "rPh":
            self.phonetic += 1
        elif tag == "row":
            self.row = []

    def end(self, name: str) -> None:
        tag = self.names.get(name) or self.names.setdefault(name, local(name))
        self.capture = False
        if tag == "c" and self.value is not None:
            if self.value:  # an empty (styled) cell costs nothing more: they can be millions
                self._cell("".join(self.value))
            self.value = None
        elif tag == "rPh":
            self.phonetic -= 1
        elif tag == "row":
            while self.row and not self.row[-1]:
                self.row.pop()
            if not self.row:
                self.held = self.pending  # what an empty row held is dropped
            else:
                self.lines.append(" | ".join(self.row))
                self.pending += len(self.lines[-1])
                if len(self.lines) >= BATCH:
                    self.flush()
        elif tag == "sheetData":
            self.flush()

    def flush(self) -> None:
        if self.lines:
            self.done = not self.out.write("\n".join(self.lines), sep="\n")
            self.lines, self.held, self.pending = [], 0, 0

    def text(self, data: str) -> None:
        if self.capture and self.value is not None:
            self.keep(self.value, data)

    def _cell(self, raw: str) -> None:
        kind, style, reference = self.cell
        letters = _COLUMN.match(reference)
        gap = _column(letters.group()) - len(self.row) if letters else 0
        if 0 < gap <= MAX_GAP:
            self.row.extend([""] * gap)
        self.row.append(" ".join(self._value(kind, _int(style), raw).split()))

    def _value(self, kind: str, style: int, raw: str) -> str:
        if kind == "s":
            index = _int(raw.strip(), -1)
            return self.strings[index] if 0 <= index < len(self.strings) else ""
        if kind == "b":
            return "TRUE" if raw.strip() == "1" else "FALSE"
        if kind != "n" or not raw:
            return raw
        try:
            number = float(raw)
        except ValueError:
            return raw
        if style in self.dates and 0 <= number < 2_958_466:
            return _date(self.epoch, number)
        if number.is_integer() and abs(number) < 1e15:
            return str(int(number))
        return f"{number:.15g}"


def _date(epoch: dt.datetime, serial: float) -> str:
    moment = epoch + dt.timedelta(seconds=round(serial * 86_400))
    if serial < 1:
        return moment.time().isoformat("minutes" if moment.second == 0 else "seconds")
    if moment.time() == dt.time(0):
        return moment.date().isoformat()
    return moment.isoformat(" ", "minutes" if moment.second == 0 else "seconds")


def _column(letters: str) -> int:
    index = 0
    for char in letters:
        index = index * 26 + ord(char) - 64
    return index - 1


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value or default)
    except ValueError:
        return default
