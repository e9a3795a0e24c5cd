"""Separating a reply's new text from its quoted history and signature (issue 18, item 2).

Every reply in a thread quotes the thread again, so embedding whole bodies makes the tokens
of a thread grow with n² while what people wrote grows with n. ``split_reply`` returns the
new text to embed; the full body stays stored (and searchable by full text) by the caller.

The rules, one pass over the lines (each regex runs on at most ``_MAX_MARKER`` characters
of a line and has no nested quantifiers, so the cost is linear in the body's size):

* ``>`` lines (any depth, up to three spaces before) are quoted history, with the
  attribution line that introduces them ("On … wrote:", "Le … a écrit :", "Am … schrieb …:",
  "El … escribió:", also wrapped over two lines; "<name> wrote:" only right before ``>``
  lines). Unquoted text *between* quotes is new (inline and bottom-posted replies): it is
  kept, in order; the questions it answers are not (they were embedded with the message
  that asked them).
* Unmarked history cuts the body to its end: an Outlook ``-----Original Message-----``
  line (and its French, German, Spanish forms), a ``From:``/``De :``/``Von:`` line followed
  within five lines by two other header fields (``Sent:``/``Envoyé :``/``Gesendet:``/
  ``Enviado el:``/``Date:``, ``To:``/``À :``/``An:``/``Para:``, ``Subject:``/``Objet :``/
  ``Betreff:``/``Asunto:``), or a full attribution line followed by unquoted text (an HTML
  blockquote rendered without ``>``).
* A forward ("---------- Forwarded message ---------", Apple Mail's "Begin forwarded
  message:", and their translations) is NOT history: the forwarded body is often the only
  copy of that content the memory will get, so from the marker on everything is new, and
  no later header block or attribution line cuts it (a Gmail forward's header looks like
  Outlook's).
* A signature is a ``-- `` (or ``--``) line followed by at most ``_MAX_SIG_LINES`` lines up
  to the end of its segment, or a mobile closer ("Sent from my iPhone", "Envoyé de mon
  iPhone", "Von meinem iPhone gesendet", "Enviado desde mi iPhone", "Get Outlook for iOS")
  that is the last line of its segment. Valedictions ("Best,", "Cordialement") and names
  are kept: they cannot be told from prose safely.

When unsure, text stays new: losing a user's words costs more than a few extra tokens.
A body with any non-blank text never yields empty new text: the whole body is the fallback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Literal

Kind = Literal["new", "quote", "signature"]

_MAX_MARKER = 400  # longest line (or two wrapped lines) read as an attribution/header line
_MAX_SIG_LINES = 10  # a "-- " block longer than this is prose, not a signature
_MAX_SIG_CHARS = 1000
_HEADER_WINDOW = 6  # lines read after a From: line for the other header fields

_QUOTE = re.compile(r"[ \t]{0,3}>")
_ATTR_HEAD = re.compile(r"[ \t]*(?:On|Le|Am|El)\s", re.IGNORECASE)
_VERBS_LAST = ("wrote", "a écrit", "escribió", "escribio")  # the verb ends the line
_VERB_BEFORE_SENDER = "schrieb "  # German puts the sender after it: "… schrieb Ann <a@b>:"
_ORIGINAL = re.compile(
    r"[ \t>]*-{2,}\s?(?:Original Message|Message d'origine|Ursprüngliche Nachricht|"
    r"Mensaje original|Originalnachricht)\s?-{2,}",
    re.IGNORECASE,
)
_FORWARD = re.compile(
    r"[ \t]*(?:-{3,}\s?(?:Forwarded message|Message transféré|Weitergeleitete Nachricht|"
    r"Mensaje reenviado)\s?-{3,}|Begin forwarded message\s?:|Début du message réexpédié\s?:|"
    r"Anfang der weitergeleiteten Nachricht\s?:|Inicio del mensaje reenviado\s?:)",
    re.IGNORECASE,
)
_FROM = re.compile(r"[ \t]*\*?(?:From|De|Von)\s?:", re.IGNORECASE)
_HEADER_FIELD = re.compile(  # the fields an Outlook header has after From:
    r"[ \t]*\*?(?:(?P<sent>Sent|Date|Envoyé|Gesendet|Datum|Enviado el|Enviado|Fecha)|"
    r"(?P<to>To|À|A|An|Para|Pour)|(?P<subject>Subject|Objet|Betreff|Asunto))\s?:",
    re.IGNORECASE,
)
_SEPARATOR = frozenset("_-=")  # Outlook's rule line above its header block
_SIG_DELIM = re.compile(r"--[ \t]?$")
_MOBILE = re.compile(
    r"[ \t]*(?:Sent from my |Sent from Mail for |Get Outlook for |Envoyé de mon |"
    r"Envoyé depuis mon |Obtenir Outlook pour |Von meinem [^\n]{1,40} gesendet|"
    r"Gesendet von meinem |Enviado desde mi |Obtener Outlook para )",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of lines of one kind: ``text[start:end]`` of the body it was cut from."""

    kind: Kind
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Reply:
    """A body split into its new text, quoted history and signature.

    ``new`` is what to chunk and embed; ``segments`` cover the body exactly, in order, so a
    caller can also show or index the parts by offset.
    """

    text: str
    segments: tuple[Segment, ...]
    fallback: bool = False  # nothing new was found: ``new`` is the whole body

    @property
    def new(self) -> str:
        """The new segments' text, stripped, joined by a blank line (inline replies)."""
        if self.fallback:
            return self.text.strip()
        return self._join("new", "\n\n")

    @property
    def quoted(self) -> tuple[str, ...]:
        """Each quoted block (attribution lines included), as in the body."""
        return tuple(self._part(s) for s in self.segments if s.kind == "quote")

    @property
    def signature(self) -> str:
        """The signature block(s), delimiter or closer included; empty when none."""
        return self._join("signature", "\n")

    def _part(self, seg: Segment) -> str:
        return self.text[seg.start : seg.end].strip("\r\n")

    def _join(self, kind: Kind, sep: str) -> str:
        parts = (self.text[s.start : s.end].strip() for s in self.segments if s.kind == kind)
        return sep.join(p for p in parts if p)


class _Body:
    """The body's lines with their offsets and per-line flags, each computed once.

    Lines are classified by list comprehensions over ``str`` methods; regexes only ever see
    a line's first ``_MAX_MARKER`` characters, and only for the few lines that are neither
    blank nor quoted. That keeps a 5 MB body, or a million ``>`` lines, linear.
    """

    def __init__(self, text: str) -> None:
        raw = text.splitlines(keepends=True)
        self.starts = [0, *accumulate(map(len, raw))]
        self.lines = [r.rstrip("\r\n") for r in raw]
        self.quote = [ln[:1] == ">" or _QUOTE.match(ln[:8]) is not None for ln in self.lines]
        self.blank = [not ln.strip() for ln in self.lines]
        self._fields: dict[int, str | None] = {}

    def field(self, i: int) -> str | None:
        """Which header field line ``i`` is (sent, to, subject), matched once per line."""
        if i not in self._fields:
            m = _HEADER_FIELD.match(self.lines[i][:_MAX_MARKER])
            self._fields[i] = m.lastgroup if m else None
        return self._fields[i]

    def __len__(self) -> int:
        return len(self.lines)

    def next_nonblank(self, i: int) -> int:
        while i < len(self.lines) and self.blank[i]:
            i += 1
        return i


def _has_tail(line: str) -> bool:
    """Whether an attribution's verb ends ``line`` (string operations only, no regex)."""
    body = line.rstrip()
    if not body.endswith(":"):
        return False
    body = body[:-1].rstrip().lower()
    if body.endswith(_VERBS_LAST):
        return True
    at = body.rfind(_VERB_BEFORE_SENDER)
    return at >= 0 and ":" not in body[at:] and len(body) - at <= 200


def _attribution(body: _Body, i: int) -> int:
    """How many lines (0, 1 or 2) an attribution line starting at ``i`` spans.

    A full one ("On/Le/Am/El … verb …:") may wrap once; a bare "<name> wrote:" counts only
    when ``>`` lines follow, which the caller checks for every attribution anyway.
    """
    first = body.lines[i]
    if len(first) > _MAX_MARKER:
        return 0
    if _has_tail(first):
        return 1
    if i + 1 < len(body) and not body.quote[i + 1] and _ATTR_HEAD.match(first):
        both = first + " " + body.lines[i + 1]
        if len(both) <= _MAX_MARKER and _has_tail(both):
            return 2
    return 0


def _is_full_attribution(body: _Body, i: int, span: int) -> bool:
    """A dated "On/Le/Am/El …" attribution: strong enough to cut unmarked history."""
    head = " ".join(body.lines[i : i + span])
    return _ATTR_HEAD.match(head) is not None and any(c.isdigit() for c in head)


def _header_block(body: _Body, i: int) -> bool:
    """An Outlook-style header: a From: line and two other fields within a few lines."""
    line = body.lines[i][:_MAX_MARKER]
    if _ORIGINAL.match(line):
        return True
    if not _FROM.match(line):
        return False
    found = {body.field(j) for j in range(i + 1, min(i + 1 + _HEADER_WINDOW, len(body)))}
    return len(found - {None}) >= 2


def _separator_above(body: _Body, i: int) -> int:
    """``i``, or the line of a rule (``____``) just above it, blank lines between."""
    j = i - 1
    while j >= 0 and body.blank[j]:
        j -= 1
    rule = body.lines[j].strip() if j >= 0 else ""
    return j if 5 <= len(rule) <= 200 and set(rule) <= _SEPARATOR else i


def _label(body: _Body) -> list[Kind | None]:
    """Each line's kind; blank lines are ``None`` until ``_settle`` attaches them."""
    n = len(body)
    kinds: list[Kind | None] = ["quote" if q else None for q in body.quote]
    i = 0
    while i < n:
        if body.blank[i] or body.quote[i]:
            i += 1
            continue
        if _FORWARD.match(body.lines[i][:_MAX_MARKER]):
            for j in range(i, n):  # a forward is content: new to the end
                kinds[j] = None if body.blank[j] else "new"
            break
        if _header_block(body, i):
            i = _separator_above(body, i)
            kinds[i:] = ["quote"] * (n - i)
            break
        span = _attribution(body, i)
        if span:
            after = body.next_nonblank(i + span)
            if after < n and body.quote[after]:
                kinds[i : i + span] = ["quote"] * span
                i += span
                continue
            if after < n and _is_full_attribution(body, i, span):
                kinds[i:] = ["quote"] * (n - i)  # unmarked history to the end
                break
        kinds[i] = "new"
        i += 1
    return kinds


def _settle(kinds: list[Kind | None]) -> list[Kind]:
    """Blank lines join the run before them, or the one after at the very start."""
    out: list[Kind] = []
    prev: Kind = next((k for k in kinds if k is not None), "new")
    for k in kinds:
        prev = k if k is not None else prev
        out.append(prev)
    return out


def _runs(kinds: list[Kind]) -> list[tuple[Kind, int, int]]:
    """(kind, first line, end line) for each run of equal kinds."""
    runs: list[tuple[Kind, int, int]] = []
    start = 0
    for i in range(1, len(kinds) + 1):
        if i == len(kinds) or kinds[i] != kinds[start]:
            runs.append((kinds[start], start, i))
            start = i
    return runs


def _signature_start(body: _Body, lo: int, hi: int) -> int | None:
    """The line where a new run's trailing signature starts, if it has one."""
    last = hi - 1
    while last >= lo and body.blank[last]:
        last -= 1
    if last < lo:
        return None
    closer = body.lines[last]
    if len(closer) <= 120 and _MOBILE.match(closer):
        return last
    for j in range(max(lo, last - _MAX_SIG_LINES), last + 1):
        if len(body.lines[j]) <= 4 and _SIG_DELIM.match(body.lines[j]):
            size = body.starts[last + 1] - body.starts[j]
            return j if size <= _MAX_SIG_CHARS else None
    return None


def split_reply(text: str) -> Reply:
    """Split a plain-text message body into new text, quoted history and signature.

    Integration is this one call: embed ``split_reply(body).new``; store ``body`` as is.
    """
    body = _Body(text)
    if not len(body):
        return Reply(text, (), fallback=True)
    starts = body.starts
    segments: list[Segment] = []
    for kind, lo, hi in _runs(_settle(_label(body))):
        cut = _signature_start(body, lo, hi) if kind == "new" else None
        if cut is not None:
            if cut > lo:
                segments.append(Segment("new", starts[lo], starts[cut]))
            segments.append(Segment("signature", starts[cut], starts[hi]))
        else:
            segments.append(Segment(kind, starts[lo], starts[hi]))
    reply = Reply(text, tuple(segments))
    if text.strip() and not reply.new:
        return Reply(text, reply.segments, fallback=True)
    return reply
