"""PPTX text per slide, from the slide parts streamed with expat.

Why not python-pptx: it builds each slide's lxml tree and installs 34 MB (lxml, Pillow,
XlsxWriter); on 200 slides it took 190 ms against 104 ms here, with the same text
(bench/NOTES.md). The text is DrawingML ``a:p`` paragraphs of ``a:t`` runs in the slide
XML, read here in the same order, with the zip checks of :mod:`worker.extract.zipped` first.

Slides come in presentation order (``p:sldIdLst`` in ``ppt/presentation.xml``, resolved
through its relationships), at most ``Limits.max_pages``. A slide's text: every shape's
paragraphs in document order (titles, bodies, text boxes, grouped shapes), one line each,
shapes separated by a blank line; table rows as lines of cells joined by `` | ``. The
speaker notes follow in the same section (without the slide-number field). Charts,
SmartArt and images are other parts and are not read.
"""

from __future__ import annotations

from worker.extract.sections import Sections
from worker.extract.zipped import Package, XmlReader, local, relation_id

PRESENTATION = "ppt/presentation.xml"


def read_pptx(package: Package, out: Sections) -> None:
    """Slides into ``out`` as sections ``{"slide": n}`` (1-based, presentation order)."""
    out.title = package.title()
    relations = package.relations(PRESENTATION)
    order: list[str] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        if local(name) == "sldId":
            order.append(relation_id(attrs))

    package.parse(PRESENTATION, XmlReader(start))
    slides = [relations[rid][1] for rid in order if rid in relations]
    slides = [path for path in slides if package.has(path)]
    out.pages = len(slides)
    wanted = min(len(slides), out.limits.max_pages)
    for number, path in enumerate(slides[:wanted], start=1):
        out.start({"slide": number})
        reader = _Slide(out)
        package.parse(path, reader)
        notes = [t for kind, t in package.relations(path).values() if kind == "notesSlide"]
        if not out.full and notes and package.has(notes[0]):
            package.parse(notes[0], _Slide(out, notes=True))
        if out.full:
            break
    if len(slides) > wanted:
        out.notes.append(f"read {wanted} of {len(slides)} slides (DOCUMENT_MAX_PAGES)")


class _Slide(XmlReader):
    def __init__(self, out: Sections, notes: bool = False) -> None:
        super().__init__()
        self.out = out
        self.skip = 0
        self.in_text = False
        self.line: list[str] | None = None
        self.new_shape = True  # the next paragraph starts a shape (blank line before it)
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.cap = out.limits.max_chars
        self.skipped = frozenset({"Fallback", "fld"} if notes else {"Fallback"})

    def start(self, name: str, attrs: dict[str, str]) -> None:
        tag = local(name)
        if self.skip or tag in self.skipped:
            self.skip += 1
        elif tag == "t":
            self.in_text = True
        elif tag == "p":
            self.line = []
        elif tag == "br" and self.line is not None:
            self.line.append("\n")
        elif tag == "tbl" or (tag == "txBody" and self.row is None):
            self.new_shape = True
        elif tag == "tr":
            self.row = []
        elif tag == "tc" and self.row is not None:
            self.cell = []

    def end(self, name: str) -> None:
        tag = local(name)
        if self.skip:
            self.skip -= 1
        elif tag == "t":
            self.in_text = False
        elif tag == "p" and self.line is not None:
            text = "".join(self.line)
            self.line = None
            if self.cell is not None:
                self.cell.append(text)
            else:
                self.held = 0
                if text.strip():
                    self._write(text)
        elif tag == "tc" and self.row is not None and self.cell is not None:
            self.row.append(" ".join(" ".join(self.cell).split()))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            if any(self.row):
                self._write(" | ".join(self.row))
            self.row = None
            self.held = 0

    def text(self, data: str) -> None:
        if self.in_text and not self.skip and self.line is not None:
            self.keep(self.line, data)

    def _write(self, text: str) -> None:
        self.done = not self.out.write(text, sep="\n\n" if self.new_shape else "\n")
        self.new_shape = False
