"""What parsing gives back: plain, picklable values (they cross a process boundary).

No content ever goes into ``reason`` or ``warnings``: they are recorded in the ledger and
in events, which must hold identifiers and counts only (names of parts, numbers, the
library's exception class), never text, subjects or addresses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

#: ok: all text extracted; partial: some left out (caps, damage), see ``reason``;
#: skipped: nothing extracted (encrypted, no text layer, zip bomb, unreadable, not a
#: document), see ``reason``.
Status = Literal["ok", "partial", "skipped"]


@dataclass(frozen=True)
class Section:
    """A stretch of a document's text and where it is: ``{"page": 3}``, ``{"slide": 2}``,
    ``{"sheet": "Q3"}``, ``{"heading": "Pricing"}`` (the nearest heading above), or ``{}``."""

    text: str
    position: dict[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True)
class Document:
    type: str  # pdf | docx | pptx | xlsx | html | markdown | text | other (not a document)
    mime_type: str  # of the sniffed type (application/pdf, ...), not the declared one
    sections: tuple[Section, ...] = ()
    status: Status = "ok"
    reason: str | None = None
    pages: int | None = None  # pages / slides / sheets in the file, when known
    chars: int = 0  # characters extracted (sum of the sections' text)
    title: str | None = None  # the document's own title property, when it has one


@dataclass(frozen=True)
class Address:
    address: str
    name: str | None = None


@dataclass(frozen=True)
class Attachment:
    """One attachment of a message, as found (before any document extraction)."""

    filename: str | None
    mime_type: str  # as declared by the part, lower-cased (may lie: documents are sniffed)
    data: bytes
    content_id: str | None = None
    inline: bool = False  # an inline image referenced by the HTML body (not kept)


@dataclass(frozen=True)
class ParsedEmail:
    message_id: str | None = None  # without angle brackets
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    subject: str | None = None
    sender: Address | None = None
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    date: datetime | None = None  # timezone-aware, UTC
    text: str = ""  # what a reader sees: the text/plain alternative or the HTML's text
    html: bool = False  # True when ``text`` was converted from the HTML alternative
    attachments: tuple[Attachment, ...] = ()
    warnings: tuple[str, ...] = ()
    status: Status = "ok"
    reason: str | None = None

    @property
    def thread_root(self) -> str | None:
        """The thread's first message: References' first id, else In-Reply-To, else own."""
        if self.references:
            return self.references[0]
        return self.in_reply_to or self.message_id
