"""A raw RFC 5322 / MIME message to a :class:`ParsedEmail`: headers, the text a reader
sees, attachments. Pure, and safe on hostile input: it never raises.

Why the standard library's parser, fed through :class:`_CappedParser`: ``email`` with
``policy.default`` handles the long tail of real mail (RFC 2231 parameters, encoded
filenames, missing boundaries, uuencode) better than anything we would write, but it
recurses once per nesting level and checks every line against every open boundary:
measured, 50 nested multiparts took 60 ms, 300 took 0.34 s and 1,000 raised
``RecursionError``. The subclass counts the levels as the parser opens them and, at
``limits.max_mime_depth``, makes the part a leaf (its body is then read as opaque bytes
and left out), so parsing stays linear and shallow whatever the nesting.

Why our own walk instead of ``get_body()``: ``get_body`` returns *one* part, while a
multipart/mixed message can carry several inline text parts (a body and a mailing-list
footer) and forwarded messages whose text the reader sees too. The walk follows the same
preference: in a multipart/alternative the text/plain alternative when it has text, else
the richest (last) one, its HTML converted with :func:`html_to_text`.

Text parts are decoded by :mod:`charsets` (declared charset, UTF-8, detection), not by
``get_content()``, which replaces every byte of a lying declaration with U+FFFD.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.feedparser import BytesFeedParser
from email.message import Message
from typing import Any

from worker.extract import charsets
from worker.extract.limits import Limits
from worker.extract.mailheaders import POLICY, Headers, decode_words, read_headers
from worker.extract.results import Address, Attachment, ParsedEmail
from worker.text.html import html_to_text

_FORWARD_RULE = "---------- Forwarded message ---------"
_FORWARDED = frozenset(["message/rfc822", "message/global"])
#: Detached signatures of multipart/signed: not something a person attached.
_SIGNATURES = frozenset(
    ["application/pgp-signature", "application/pkcs7-signature", "application/x-pkcs7-signature"]
)
_CID = re.compile(r"cid:([^\s\"'<>)]+)", re.I)
_LINE_ENDS = re.compile(r"\r\n?")
_LEFT_OUT_TYPE = "application/x-cos-left-out"
#: Header lines read per part (real mail has tens to a few hundred).
MAX_HEADER_LINES = 5_000
#: Per-part warnings kept; more are counted in one last warning.
MAX_WARNINGS = 50


def parse_email(raw: bytes, limits: Limits) -> ParsedEmail:
    """Never raises: anything unexpected -> ParsedEmail(status="skipped", reason=<exception
    class / cap, no content>)."""
    try:
        return _parse(raw, limits)
    except Exception as exc:  # the contract: a reason, never an exception
        return ParsedEmail(status="skipped", reason=type(exc).__name__)


def _parse(raw: bytes, limits: Limits) -> ParsedEmail:
    if len(raw) > limits.max_email_bytes:
        return ParsedEmail(status="skipped", reason=f"EMAIL_MAX_BYTES ({limits.max_email_bytes})")
    if not raw.strip():
        return ParsedEmail(status="skipped", reason="empty")
    parser = _CappedParser(limits)
    root = parser.parse(raw)
    if not root.keys():
        return ParsedEmail(status="skipped", reason="not a message (no header fields)")
    walker = _Walker(limits, parser)
    head = read_headers(root, walker.warnings)
    text, html = _assemble(walker.message(root, "", 0))
    attachments = walker.finish()
    warnings, problems = walker.report()
    return ParsedEmail(
        message_id=head.message_id,
        in_reply_to=head.in_reply_to,
        references=head.references,
        subject=head.subject,
        sender=head.sender,
        to=head.to,
        cc=head.cc,
        bcc=head.bcc,
        date=head.date,
        text=text,
        html=html,
        attachments=attachments,
        warnings=warnings,
        status="partial" if problems else "ok",
        reason=problems[0] if problems else None,
    )


class _PartsCapReached(Exception):
    """Raised inside the parser to stop it building parts that will not be read."""


class _CappedParser(BytesFeedParser):
    """The standard feed parser (``policy.default`` with a safe header registry), capped.

    ``_parse_headers`` runs once per part, right after the parser opened it and before it
    decides whether to recurse into its body: a container at the depth cap is retyped
    there to an opaque leaf (the walk reports it as left out). Past the parts cap the
    parse stops (100,000 tiny parts took 2.4 s and a Message object each) and
    :meth:`parse` returns the tree built so far. A part's header block is read up to
    :data:`MAX_HEADER_LINES` lines (every field access scans them all)."""

    def __init__(self, limits: Limits) -> None:
        super().__init__(policy=POLICY)
        self.max_depth = limits.max_mime_depth
        self.max_parts = limits.max_mime_parts
        self.parts = 0
        self.stopped = False
        self.header_lines_cut = 0
        #: Ids of the parts retyped at the depth cap (their content is not parsed).
        self.left_out: set[int] = set()

    def parse(self, raw: bytes) -> Message:
        try:
            self.feed(raw)
            return self.close()
        except _PartsCapReached:
            self.stopped = True
            root: Message = self._state()._msgstack[0]
            return root

    def _state(self) -> Any:
        return self  # the parser's private attributes, untyped in typeshed

    def _parse_headers(self, lines: list[str]) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise _PartsCapReached
        if len(lines) > MAX_HEADER_LINES:
            lines = lines[:MAX_HEADER_LINES]
            self.header_lines_cut += 1
        parent: Any = super()
        parent._parse_headers(lines)
        state = self._state()
        part: Message = state._cur
        depth = len(state._msgstack) - 1
        if depth >= self.max_depth and part.get_content_maintype() in ("multipart", "message"):
            del part["content-type"]
            part["Content-Type"] = _LEFT_OUT_TYPE
            self.left_out.add(id(part))


@dataclass(frozen=True)
class _Piece:
    """A stretch of body text in reading order; HTML is converted only if it is used."""

    text: str
    html: bool = False


@dataclass(frozen=True)
class _Found:
    """A leaf that may become an attachment (decided after the walk: whether an image is
    referenced by the HTML is known only when all of it has been read)."""

    part: Message
    path: str
    mime_type: str
    filename: str | None
    content_id: str | None
    inline: bool


class _Walker:
    """One message's walk: text pieces in reading order, attachment candidates, and what
    was left out (for the warnings and the partial status)."""

    def __init__(self, limits: Limits, parser: _CappedParser) -> None:
        self.limits = limits
        self.parser = parser
        #: Per-part notes (charsets, damage), content-free; capped in :meth:`report`.
        self.warnings: list[str] = []
        #: Damage that makes the result partial (a cap hit is added by :meth:`report`).
        self.problems: list[str] = []
        self.parts = 0
        self.parts_over = 0
        self.too_deep = 0
        self.inline_images = 0
        self.attachments_over = 0
        self.found: list[_Found] = []
        self.cids: set[str] = set()

    # -- structure --------------------------------------------------------------------

    def message(self, part: Message, path: str, depth: int) -> list[_Piece]:
        """The pieces of text of one part (and everything below it)."""
        out: list[_Piece] = []
        self._visit(part, path, depth, out)
        return out

    def _visit(self, part: Message, path: str, depth: int, out: list[_Piece]) -> None:
        if self.parts >= self.limits.max_mime_parts:
            self.parts_over += sum(1 for _ in part.walk())
            return
        self.parts += 1
        if id(part) in self.parser.left_out:
            self.too_deep += 1
            return
        try:
            self._part(part, path or "1", depth, out)
        except Exception as exc:  # one damaged part must not cost the rest of the message
            self.warnings.append(f"part {path or '1'}: left out ({type(exc).__name__})")
            self.problems.append(f"damaged part ({type(exc).__name__})")

    def _part(self, part: Message, path: str, depth: int, out: list[_Piece]) -> None:
        ctype = part.get_content_type()
        maintype = ctype.split("/", 1)[0]
        if maintype == "multipart":
            payload = part.get_payload()
            children = (
                [c for c in payload if isinstance(c, Message)]
                if isinstance(payload, list)
                else None
            )
            if children is None:
                self.warnings.append(f"part {path}: multipart without boundary left out")
                self.problems.append("damaged part (no boundary)")
                return
            prefix = "" if path == "1" and depth == 0 else f"{path}."
            if ctype == "multipart/alternative":
                self._alternative(children, prefix, depth, out)
                return
            for i, child in enumerate(children, 1):
                self._visit(child, f"{prefix}{i}", depth + 1, out)
            return
        if maintype == "message":
            inner = part.get_payload(0) if part.is_multipart() else None
            if ctype in _FORWARDED and isinstance(inner, Message):
                self._forwarded(inner, path, depth + 1, out)
            return  # delivery-status and other reports: no reader text
        disposition = part.get_content_disposition()
        if ctype in ("text/plain", "text/html") and disposition != "attachment":
            out.append(self._text(part, path, html=ctype == "text/html"))
            return
        if ctype in _SIGNATURES:
            return
        self.found.append(
            _Found(part, path, ctype, _filename(part), _content_id(part), disposition == "inline")
        )

    def _alternative(
        self, children: list[Message], prefix: str, depth: int, out: list[_Piece]
    ) -> None:
        """Every alternative is walked (attachments can hide in any of them, Apple Mail
        puts them in the HTML branch), but only the chosen one's text is kept."""
        versions = [self.message(c, f"{prefix}{i}", depth + 1) for i, c in enumerate(children, 1)]
        filled = [v for v in versions if any(p.text.strip() for p in v)]
        plain = [v for v in filled if not any(p.html for p in v)]
        if plain or filled:
            out.extend(plain[0] if plain else filled[-1])

    def _forwarded(self, inner: Message, path: str, depth: int, out: list[_Piece]) -> None:
        head = read_headers(inner, self.warnings, f"part {path}: ")
        out.append(_Piece(_forward_block(head)))
        self._visit(inner, path, depth, out)

    def _text(self, part: Message, path: str, html: bool) -> _Piece:
        data = part.get_payload(decode=True)
        raw = data if isinstance(data, bytes) else b""
        text, note = charsets.decode(raw, part.get_content_charset())
        if note:
            self.warnings.append(f"part {path}: {note}")
        if html:
            self.cids.update(c.lower() for c in _CID.findall(text))
        return _Piece(_LINE_ENDS.sub("\n", text), html)

    # -- attachments ------------------------------------------------------------------

    def finish(self) -> tuple[Attachment, ...]:
        """The attachments kept (inline images referenced by the HTML skipped, at most
        ``max_attachments``), and the warnings for what was left out."""
        kept: list[Attachment] = []
        for found in self.found:
            if found.mime_type.startswith("image/") and (
                found.inline or (found.content_id and found.content_id.lower() in self.cids)
            ):
                self.inline_images += 1
                continue
            if len(kept) >= self.limits.max_attachments:
                self.attachments_over += 1
                continue
            data = found.part.get_payload(decode=True)
            kept.append(
                Attachment(
                    filename=found.filename,
                    mime_type=found.mime_type,
                    data=data if isinstance(data, bytes) else b"",
                    content_id=found.content_id,
                    inline=found.inline,
                )
            )
        return tuple(kept)

    def report(self) -> tuple[tuple[str, ...], list[str]]:
        """The warnings (caps first, then at most :data:`MAX_WARNINGS` per-part notes) and
        the problems (first one: the reason of a partial result)."""
        limits, parser = self.limits, self.parser
        caps: list[tuple[str, str]] = []
        if self.too_deep:
            caps.append(("MIME_MAX_DEPTH", f"{self.too_deep} parts nested deeper left out"))
        if self.parts_over or parser.stopped:
            left = "later parts" if parser.stopped else f"{self.parts_over} parts"
            caps.append(("MIME_MAX_PARTS", f"{left} left out"))
        if self.attachments_over:
            caps.append(("EMAIL_MAX_ATTACHMENTS", f"{self.attachments_over} attachments left out"))
        values = {
            "MIME_MAX_DEPTH": limits.max_mime_depth,
            "MIME_MAX_PARTS": limits.max_mime_parts,
            "EMAIL_MAX_ATTACHMENTS": limits.max_attachments,
        }
        warnings = [f"{name} ({values[name]}): {what}" for name, what in caps]
        if parser.header_lines_cut:
            warnings.append(
                f"{parser.header_lines_cut} header blocks cut at {MAX_HEADER_LINES} lines"
            )
            self.problems.append("header block too long")
        if self.inline_images:
            warnings.append(f"{self.inline_images} inline images skipped")
        notes = self.warnings
        warnings.extend(notes[:MAX_WARNINGS])
        if len(notes) > MAX_WARNINGS:
            warnings.append(f"{len(notes) - MAX_WARNINGS} more part warnings")
        return tuple(warnings), [name for name, _ in caps] + self.problems


def _assemble(pieces: list[_Piece]) -> tuple[str, bool]:
    """The body text: pieces in order, HTML converted, joined by blank lines; whether any
    of it came from HTML."""
    texts: list[str] = []
    html = False
    for piece in pieces:
        text = html_to_text(piece.text) if piece.html else piece.text
        text = text.strip("\n").rstrip()
        if text.strip():
            texts.append(text)
            html = html or piece.html
    return charsets.clean("\n\n".join(texts)), html


def _forward_block(head: Headers) -> str:
    lines = [_FORWARD_RULE]
    if head.sender:
        lines.append(f"From: {_show(head.sender)}")
    if head.date_text:
        lines.append(f"Date: {head.date_text}")
    if head.subject:
        lines.append(f"Subject: {head.subject}")
    if head.to:
        lines.append(f"To: {', '.join(_show(a) for a in head.to)}")
    if head.cc:
        lines.append(f"Cc: {', '.join(_show(a) for a in head.cc)}")
    return "\n".join(lines)


def _show(address: Address) -> str:
    return f"{address.name} <{address.address}>" if address.name else address.address


def _filename(part: Message) -> str | None:
    """The part's file name: RFC 2231 and encoded words decoded, no directories, no NULs."""
    name = part.get_filename()
    if not isinstance(name, str):
        return None
    if "=?" in name:
        name = decode_words(name)
    name = charsets.clean(name).replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:255] or None


def _content_id(part: Message) -> str | None:
    value = part.get("content-id")
    if value is None:
        return None
    ident = charsets.clean(str(value)).strip().strip("<>").strip()
    return ident or None
