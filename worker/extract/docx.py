"""DOCX text split at headings, from ``word/document.xml`` streamed with expat.

Why not python-docx or mammoth: on a 300-heading document (bench/NOTES.md) this reader
took 152 ms, python-docx 458 ms (an lxml tree of the whole document; 13 MB installed with
lxml) and mammoth 1,569 ms (a full object model, then text); neither gives positions by
heading without walking styles again, and neither would let the zip checks of
:mod:`worker.extract.zipped` run first. What Word puts in ``document.xml`` is simple:

* ``w:p`` paragraphs of ``w:r`` runs holding ``w:t`` text, ``w:tab``, ``w:br``/``w:cr``;
* headings are paragraphs whose style (``w:pStyle``, resolved through ``styles.xml``) is
  named ``heading N`` or ``Title`` - built-in names are English whatever the UI language,
  while style *ids* are localized (``berschrift1``) - or has an outline level;
* ``w:tbl`` tables: a row becomes one line, its cells joined by `` | `` (a cell's
  paragraphs by spaces; a nested table's rows go into its cell);
* text boxes nest paragraphs inside a paragraph; ``mc:Fallback`` repeats a text box's
  content for old readers and is skipped; deleted text (``w:delText``) and field codes
  (``w:instrText``) are not ``w:t`` and are left out.

Headers, footers, footnotes and comments are other parts and are not read.
"""

from __future__ import annotations

import re

from worker.extract.sections import Sections, heading
from worker.extract.zipped import Package, XmlReader, attr, local

DOCUMENT, STYLES = "word/document.xml", "word/styles.xml"
_HEADING_NAME = re.compile(r"^(heading [1-9]|title)$", re.I)
_HEADING_ID = re.compile(r"^(heading[1-9]|title)$", re.I)
_SKIP = frozenset({"Fallback", "delText", "instrText"})


def read_docx(package: Package, out: Sections) -> None:
    """``word/document.xml`` into ``out``: sections ``{}`` then ``{"heading": ...}``."""
    out.title = package.title()
    headings = _heading_styles(package) if package.has(STYLES) else None
    package.parse(DOCUMENT, _Body(out, headings))


def _heading_styles(package: Package) -> set[str]:
    """Ids of paragraph styles that are headings (by built-in name or outline level)."""
    found: set[str] = set()
    current: list[str] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        tag = local(name)
        if tag == "style":
            current[:] = [attr(attrs, "styleId") or ""]
        elif current and (
            (tag == "name" and _HEADING_NAME.match(attr(attrs, "val") or ""))
            or (tag == "outlineLvl" and (attr(attrs, "val") or "9") < "9")
        ):
            found.add(current[0])

    package.parse(STYLES, XmlReader(start))
    return found


class _Body(XmlReader):
    def __init__(self, out: Sections, headings: set[str] | None) -> None:
        super().__init__()
        self.out = out
        self.headings = headings
        self.skip = 0  # depth inside skipped elements
        self.in_text = False
        self.in_run = 0
        self.paragraphs: list[list[str]] = []  # open paragraphs (text boxes nest them)
        self.is_heading: list[bool] = []
        self.tables: list[list[str]] = []  # open tables: the cells of their current row
        self.cells: list[list[str]] = []  # open cells: their paragraphs
        self.rows = 0  # rows written of the current top-level table
        self.cap = out.limits.max_chars

    def start(self, name: str, attrs: dict[str, str]) -> None:
        tag = local(name)
        if self.skip or tag in _SKIP:
            self.skip += 1
            return
        if tag == "t":
            self.in_text = True
        elif tag == "r":
            self.in_run += 1
        elif tag == "p":
            self.paragraphs.append([])
            self.is_heading.append(False)
        elif self.paragraphs and tag in ("tab", "br", "cr", "noBreakHyphen") and self.in_run:
            self.paragraphs[-1].append({"tab": "\t", "noBreakHyphen": "-"}.get(tag, "\n"))
        elif self.paragraphs and tag == "pStyle":
            style = attr(attrs, "val") or ""
            known = self.headings
            self.is_heading[-1] = (
                style in known if known is not None else bool(_HEADING_ID.match(style))
            )
        elif self.paragraphs and tag == "outlineLvl":
            self.is_heading[-1] = (attr(attrs, "val") or "9") < "9"
        elif tag == "tbl":
            self.tables.append([])
            self.rows = self.rows if len(self.tables) > 1 else 0
        elif tag == "tr" and self.tables:
            self.tables[-1] = []
        elif tag == "tc" and self.tables:
            self.cells.append([])

    def end(self, name: str) -> None:
        tag = local(name)
        if self.skip:
            self.skip -= 1
            return
        if tag == "t":
            self.in_text = False
        elif tag == "r":
            self.in_run -= 1
        elif tag == "p" and self.paragraphs:
            self._paragraph("".join(self.paragraphs.pop()), self.is_heading.pop())
            if not self.paragraphs and not self.cells:
                self.held = 0
        elif tag == "tc" and self.cells and self.tables:
            self.tables[-1].append(
                " ".join(" ".join(p.split()) for p in self.cells.pop() if p.strip())
            )
        elif tag == "tr" and self.tables:
            row = self.tables[-1]
            line = " | ".join(row) if any(row) else ""
            if len(self.tables) > 1 and self.cells:
                self.cells[-1].append(line)  # a nested table's row, inside the outer cell
            else:
                self.held = 0
                if line:
                    self.done = not self.out.write(line, sep="\n" if self.rows else "\n\n")
                    self.rows += 1
        elif tag == "tbl" and self.tables:
            self.tables.pop()

    def text(self, data: str) -> None:
        if self.in_text and not self.skip and self.paragraphs:
            self.keep(self.paragraphs[-1], data)

    def _paragraph(self, text: str, is_heading: bool) -> None:
        if self.cells and len(self.cells) == len(self.tables):  # a paragraph of a cell
            self.cells[-1].append(text)
            return
        if not text.strip():
            return
        if is_heading and (title := heading(text)):
            self.out.start({"heading": title})
        self.done = not self.out.write(text)
