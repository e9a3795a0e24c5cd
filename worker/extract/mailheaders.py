"""A message's header fields as values: addresses, ids, date, subject (for ``mime.py``).

Why not just ``msg["To"].addresses`` and ``str(msg["Subject"])``: ``email.policy.default``
parses headers well when they follow the RFCs and breaks in ways that matter on real
mail:

* raw 8-bit header bytes (UTF-8 names from clients that skip RFC 2047) come back as
  lone surrogates; they are decoded here (:func:`charsets.clean`) *before* the header
  parser sees them;
* an encoded word whose charset lies or is unknown becomes U+FFFD; a multi-byte character
  split over two encoded words (common in Japanese subjects) is lost. :func:`decode_words`
  joins adjacent words' bytes and decodes them with the same fallbacks as bodies;
* nested comments (``((((...``) make the parser recurse until ``RecursionError``, which
  the parser raises from *inside* ``get_content_type()``. :data:`POLICY` is
  ``email.policy.default`` with a header registry that retries such a value without
  parentheses, then as empty, instead of raising anywhere;
* a header value can be megabytes long; the parser is linear but slow per character, so
  values are read up to :data:`MAX_HEADER_CHARS`.
"""

from __future__ import annotations

import binascii
import email.policy
import re
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import Message
from email.utils import parsedate_to_datetime

from worker.extract import charsets
from worker.extract.results import Address

#: Characters of one header value read (64 KiB: ~1,500 addresses in a To field).
MAX_HEADER_CHARS = 65_536
#: References kept: the first (the thread's root) and the last ones (the nearest parents).
MAX_REFERENCES = 100

#: Characters of header values held by the memo before it is emptied.
_CACHE_CHARS = 1_000_000
_PARENS = re.compile(r"[()]")
_FOLD = re.compile(r"\r?\n")
_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_ID = re.compile(r"<\s*([^<>\s]+?)\s*>")
_BARE_ID = re.compile(r"[^<>\s,;]+@[^<>\s,;]+")
_PLAUSIBLE = re.compile(r"[^\s@<>()\[\],;:\"\\]{1,64}@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,63}")


class _SafeRegistry(HeaderRegistry):
    """``email.policy.default``'s registry, but a value its parser raises on is retried
    without parentheses (the recursive comment parser), then parsed as empty.

    Values are cut at :data:`MAX_HEADER_CHARS` (the parser takes ~1 s per MB, and the
    message API asks for some fields several times). And memoised: the message API parses
    a field again on every access (the feed parser alone asks for each part's
    Content-Type four times), which was two thirds of the time of a typical message.
    Header objects are immutable, so sharing them is safe."""

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[tuple[str, str], BaseHeader] = {}
        self._cached_chars = 0

    def __call__(self, name: str, value: str) -> BaseHeader:
        value = value[:MAX_HEADER_CHARS]
        key = (name.lower(), value)
        header = self._cache.get(key)
        if header is None:
            header = self._parse(name, value)
            if self._cached_chars > _CACHE_CHARS:
                self._cache.clear()
                self._cached_chars = 0
            self._cache[key] = header
            self._cached_chars += len(value)
        return header

    def _parse(self, name: str, value: str) -> BaseHeader:
        try:
            return super().__call__(name, value)
        except Exception:
            try:
                return super().__call__(name, _PARENS.sub(" ", value))
            except Exception:
                return super().__call__(name, "")


POLICY = email.policy.default.clone(header_factory=_SafeRegistry())


@dataclass(frozen=True)
class Headers:
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    subject: str | None
    sender: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    date: datetime | None
    date_text: str | None  # the Date field as sent (for a forwarded message's block)


def read_headers(msg: Message, warnings: list[str], where: str = "") -> Headers:
    """The fields a message record needs; problems noted in ``warnings`` (names and
    counts only), prefixed with ``where`` (``"part 2: "`` for a forwarded message)."""
    raw: dict[str, str] = {}
    for name, value in msg.raw_items():
        key = str(name).lower()
        if key not in raw and isinstance(value, str):
            raw[key] = _FOLD.sub("", value[:MAX_HEADER_CHARS])
    lists: dict[str, tuple[Address, ...]] = {}
    dropped = 0
    for field in ("from", "to", "cc", "bcc"):
        lists[field], bad = addresses(field, raw.get(field))
        dropped += bad
    if dropped:
        warnings.append(f"{where}{dropped} implausible addresses dropped")
    date = None
    date_text = charsets.clean(raw["date"]).strip() if raw.get("date") else None
    if date_text:
        date = parse_date(date_text)
        if date is None:
            warnings.append(f"{where}Date unparseable")
    ids = message_ids(raw.get("message-id", ""))
    parents = message_ids(raw.get("in-reply-to", ""))
    subject = decode_words(raw["subject"]) if "subject" in raw else None
    return Headers(
        message_id=ids[0] if ids else None,
        in_reply_to=parents[0] if parents else None,
        references=references(raw.get("references", "")),
        subject=" ".join(subject.split()) if subject is not None else None,
        sender=lists["from"][0] if lists["from"] else None,
        to=lists["to"],
        cc=lists["cc"],
        bcc=lists["bcc"],
        date=date,
        date_text=date_text,
    )


def addresses(field: str, value: str | None) -> tuple[tuple[Address, ...], int]:
    """The plausible addresses of an address field (lower-cased), and how many were not."""
    if not value:
        return (), 0
    header = POLICY.header_factory(field, charsets.clean(value))
    kept: list[Address] = []
    dropped = 0
    for item in getattr(header, "addresses", ()):
        address = charsets.clean(item.addr_spec).strip().lower()
        if not _PLAUSIBLE.fullmatch(address):
            dropped += 1
            continue
        name = charsets.clean(item.display_name or "").strip().strip("\"'").strip()
        kept.append(Address(address, name or None))
    return tuple(kept), dropped


def message_ids(value: str) -> list[str]:
    """Message ids in a field, without angle brackets; bare ``local@domain`` tokens count
    when no bracketed id is there (some clients omit the brackets)."""
    found = [charsets.clean(m) for m in _ID.findall(value)]
    if not found:
        found = [charsets.clean(m) for m in _BARE_ID.findall(value)]
    return [i for i in found if i]


def references(value: str) -> tuple[str, ...]:
    """The References ids, at most :data:`MAX_REFERENCES`: the first and the last ones.

    One pass without building the whole list: a hostile field can hold a million ids."""
    matches = _ID.finditer(value) if "<" in value else _BARE_ID.finditer(value)
    first: str | None = None
    last: deque[str] = deque(maxlen=MAX_REFERENCES - 1)
    for match in matches:
        ident = charsets.clean(match.group(match.lastindex or 0))
        if not ident:
            continue
        if first is None:
            first = ident
        else:
            last.append(ident)
    return () if first is None else (first, *last)


def parse_date(value: str) -> datetime | None:
    """An aware UTC datetime; a date without zone (``-0000``) is taken as UTC."""
    try:
        parsed = parsedate_to_datetime(value[:256])
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def decode_words(value: str) -> str:
    """RFC 2047 encoded words decoded, leniently: adjacent words in one charset are joined
    as bytes before decoding (a character may be split over two), or decoded one by one
    when the joined bytes do not decode; whitespace between words dropped; a word that
    cannot be decoded (bad base64) kept as written; raw 8-bit text as UTF-8 or cp1252."""
    out: list[str] = []
    run: list[bytes] = []
    run_charset = ""
    last_was_word = False
    pos = 0

    def flush() -> None:
        if run:
            out.append(_decode_run(run, run_charset))
            run.clear()

    for match in _WORD.finditer(value):
        between = value[pos : match.start()]
        pos = match.end()
        if between and not (last_was_word and between.isspace()):
            flush()
            out.append(charsets.clean(between))
        charset = match.group(1).split("*", 1)[0].lower()
        data = _word_bytes(match.group(2), match.group(3))
        last_was_word = data is not None
        if data is None:
            flush()
            out.append(charsets.clean(match.group(0)))
            continue
        if charset != run_charset:
            flush()
            run_charset = charset
        run.append(data)
    flush()
    out.append(charsets.clean(value[pos:]))
    return "".join(out)


def _decode_run(words: list[bytes], charset: str) -> str:
    codec = charsets.codec_name(charset)
    if codec is not None:
        try:
            return charsets.clean(b"".join(words).decode(codec))
        except UnicodeDecodeError:
            pass
    return "".join(charsets.decode(word, charset)[0] for word in words)


def _word_bytes(encoding: str, text: str) -> bytes | None:
    raw = text.encode("ascii", "replace")
    try:
        if encoding in "bB":
            raw = raw.rstrip(b"=")
            return binascii.a2b_base64(raw + b"=" * (-len(raw) % 4), strict_mode=True)
        return binascii.a2b_qp(raw, header=True)
    except (binascii.Error, ValueError):
        return None
