"""Collecting a document's text into positioned sections, within the character cap.

Every format reader writes blocks (a paragraph, a table row, a page's text) into one
:class:`Sections`; the cap is checked on every write, so a reader's memory is bounded by
``Limits.max_chars`` whatever the file claims, and a reader stops as soon as
:attr:`Sections.full` is set instead of parsing the rest of the file for nothing.

Text is normalized here, once for all formats: NUL removed (PostgreSQL ``text`` cannot hold
U+0000), lone surrogates replaced, other control characters made spaces, runs of spaces and
tabs collapsed, line ends ``\\n``, at most one blank line in a row. Blocks are joined by a
blank line (the chunker's paragraph cut) unless the reader asks for a line break (rows of a
table, lines of a slide). A section longer than :data:`SECTION_CHARS` is continued in a new
section with the same position, so no single string grows with the document.
"""

from __future__ import annotations

import re

from worker.extract.limits import Limits
from worker.extract.results import Section

#: A section is continued in a new one (same position) past this many characters.
SECTION_CHARS = 100_000
#: Headings used as positions are cut to this many characters.
HEADING_CHARS = 200

_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f\ufffe\uffff]")
_BREAKS = re.compile("\r\n?|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# Only what changes: a run of 2+ blanks or one non-space blank (every single space matched
# and replaced by itself cost 3x on PDF page text); a space before or after a line end.
_HSPACE = re.compile(
    "[ \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]{2,}|[\t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]"
)
_EDGES = re.compile(" \n ?|\n ")
_BLANKS = re.compile("\n{3,}")


def normalize(text: str) -> str:
    """``text`` cleaned as described in the module doc (idempotent)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if _SURROGATE.search(text):
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    text = _CONTROL.sub(" ", _BREAKS.sub("\n", text))
    text = _EDGES.sub("\n", _HSPACE.sub(" ", text))
    return _BLANKS.sub("\n\n", text).strip()


def heading(text: str) -> str:
    """A heading's text as a position: one line, at most :data:`HEADING_CHARS`."""
    return " ".join(normalize(text).split())[:HEADING_CHARS]


class Sections:
    """The sections read so far, what was left out, and the facts readers find."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.sections: list[Section] = []
        self.chars = 0
        self.full = False  # the character cap is reached: stop reading
        self.notes: list[str] = []  # why the result is partial (no content, see results.py)
        self.pages: int | None = None
        self.title: str | None = None
        self._position: dict[str, str | int] = {}
        self._parts: list[str] = []
        self._length = 0

    def start(self, position: dict[str, str | int]) -> None:
        """Close the current section; what follows is at ``position``."""
        self._flush()
        self._position = position

    def write(self, text: str, sep: str = "\n\n") -> bool:
        """Append a block to the current section (``sep`` before it unless it is the first);
        False once the character cap is reached (the reader should stop)."""
        if self.full:
            return False
        block = normalize(text)
        if not block:
            return True
        if self._parts and self._length + len(block) > SECTION_CHARS:
            self._flush()
        joint = sep if self._parts else ""
        room = self.limits.max_chars - self.chars - len(joint)
        if len(block) > room:
            block = block[: max(room, 0)].rstrip()
            self.full = True
            self.notes.append(
                f"text cut at {self.limits.max_chars} characters (DOCUMENT_MAX_CHARS)"
            )
            if not block:
                return False
        self._parts.append(joint + block)
        self._length += len(joint) + len(block)
        self.chars += len(joint) + len(block)
        return not self.full

    def cut(self) -> None:
        """Stop here: the character cap is reached (a reader that took only part of a
        block's source text itself calls this)."""
        if not self.full:
            self.full = True
            self.notes.append(
                f"text cut at {self.limits.max_chars} characters (DOCUMENT_MAX_CHARS)"
            )

    def close(self) -> tuple[Section, ...]:
        """All sections, the current one included."""
        self._flush()
        return tuple(self.sections)

    def _flush(self) -> None:
        if self._parts:
            self.sections.append(Section("".join(self._parts), dict(self._position)))
        self._parts, self._length = [], 0
