"""Bytes of a mail part or header to text, when the declared charset cannot be trusted.

Why not ``EmailMessage.get_content()`` for text: it decodes with the declared charset and
``errors="replace"`` (a lying declaration turns every accented letter into U+FFFD, and a
declared ``iso-8859-1`` happily "decodes" UTF-8 into mojibake) and raises ``LookupError``
on a charset Python does not know. Mail in the wild declares charsets wrongly often
enough (clients that label cp1252 as utf-8, gateways that label everything latin-1) that
the order has to be ours:

1. the declared charset when the bytes decode cleanly with it (``iso-8859-1`` and
   ``us-ascii`` labels read as windows-1252, as browsers do: the C1 range is curly quotes
   and the euro sign, never control characters), except that bytes which are valid,
   non-ASCII UTF-8 are UTF-8 whatever a single-byte label says (cp1252 or latin-1 text
   is valid UTF-8 only by accident: "Ã©" pairs);
2. UTF-8;
3. windows-1252 when it decodes cleanly and reads as Western text (few non-ASCII
   letters: mojibake of CJK or Cyrillic is mostly non-ASCII);
4. ``charset_normalizer``'s best guess unless that is a Latin-script single-byte codec
   (measured: right on Shift_JIS, but cp1250 for short French text, so any Latin guess
   becomes windows-1252);
5. windows-1252 (with replacement characters where it has none).

Every result is :func:`clean`: no U+0000 (PostgreSQL text cannot hold it) and no lone
surrogates (they cannot be encoded as UTF-8 for storage).
"""

from __future__ import annotations

import codecs
import re

import charset_normalizer

#: Codecs that are Python conveniences, not mail charsets: they turn escape sequences in
#: the bytes into arbitrary code points (NULs, surrogates), so a label naming one is
#: treated as unknown.
_REFUSED = frozenset(["unicode_escape", "raw_unicode_escape", "punycode", "idna", "undefined"])
#: Codecs that decode any byte string: a clean decode proves nothing about the bytes.
_SINGLE_BYTE_LABELS = frozenset(["ascii", "latin_1", "iso8859_1"])
#: Codecs whose ASCII-only bytes do not mean ASCII text.
_NOT_ASCII_COMPATIBLE = ("utf_16", "utf_32", "utf_7", "iso2022", "hz")
#: Latin-script single-byte codecs: on short text the detector picks among them almost at
#: random (cp1250 for French), so any of them is read as windows-1252, the common one.
_LATIN = ("cp125", "iso8859", "latin", "mac_", "cp437", "cp850", "cp858")
#: Bytes examined by the fallback detectors (they are linear but not free).
_SAMPLE = 65_536
_SAFE_LABEL = re.compile(r"[A-Za-z0-9._:+-]{1,40}")
_NON_ASCII_LETTER = re.compile(r"[^\W\d_\x00-\x7f]")
_LETTER = re.compile(r"[^\W\d_]")
_NUL = re.compile("\x00+")
_ESCAPED = re.compile("[\udc80-\udcff]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_DISPLAY = {"cp1252": "windows-1252", "utf_8": "utf-8", "ascii": "us-ascii"}


def label(charset: str | None) -> str:
    """A declared charset as it may appear in a warning: a name Python knows, or a
    private ``x-`` name; else ``<unrecognised>`` (the parameter is sender-controlled: it
    could carry any text, and warnings must hold none)."""
    if not charset or not _SAFE_LABEL.fullmatch(charset):
        return "<unrecognised>"
    name = charset.lower()
    return name if name.startswith("x-") or codec_name(name) is not None else "<unrecognised>"


def codec_name(charset: str | None) -> str | None:
    """Python's codec for a declared charset, or None when unknown or refused."""
    if not charset:
        return None
    name = charset.strip().strip("\"'").lower()
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True):
        return None
    name = info.name.replace("-", "_")
    return None if name in _REFUSED else name


def clean(text: str) -> str:
    """No NULs; escaped raw bytes (``surrogateescape``, how the parser keeps 8-bit header
    bytes) decoded as UTF-8 or windows-1252; any other lone surrogate replaced."""
    if "\x00" in text:
        text = _NUL.sub("", text)
    if text.isascii():
        return text
    try:
        text.encode("utf-8")  # C speed; a regex search over the text was 4x slower
        return text
    except UnicodeEncodeError:
        pass
    text = _ESCAPED.sub(_unescape, text)
    return _SURROGATE.sub("\ufffd", text)


def _unescape(match: re.Match[str]) -> str:
    raw = match.group(0).encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace")


def decode(data: bytes, declared: str | None) -> tuple[str, str | None]:
    """``data`` as text, and a content-free note when the declared charset was not used
    (unknown, or the bytes did not decode with it); None when it was (or none was)."""
    codec = codec_name(declared)
    text, used = _decode(data, codec)
    shown, name = label(declared), _DISPLAY.get(used, used)
    note = None
    if declared and codec is None:
        note = f"unknown charset {shown!r}; used {name}"
    elif codec is None or used == codec or (codec in _SINGLE_BYTE_LABELS and used == "cp1252"):
        note = None
    elif used == "utf_8":
        note = f"declared charset {shown!r} but the bytes are utf-8; used utf-8"
    else:
        note = f"declared charset {shown!r} did not decode; used {name}"
    return clean(text), note


def _decode(data: bytes, codec: str | None) -> tuple[str, str]:
    """The text and the codec that produced it, following the order in the module doc."""
    ascii_compatible = codec is None or not codec.startswith(_NOT_ASCII_COMPATIBLE)
    if data.isascii() and ascii_compatible:
        return data.decode("ascii"), codec or "ascii"
    if codec is not None and ascii_compatible and _is_utf8(data):
        return data.decode("utf-8"), "utf_8"
    if codec is not None:
        for name in ("cp1252", codec) if codec in _SINGLE_BYTE_LABELS else (codec,):
            try:
                return data.decode(name), name
            except (UnicodeDecodeError, LookupError):
                pass
    if _is_utf8(data):
        return data.decode("utf-8"), "utf_8"
    try:
        western = data.decode("cp1252")
    except UnicodeDecodeError:
        western = None
    if western is not None and _reads_western(western[:_SAMPLE]):
        return western, "cp1252"
    guess = charset_normalizer.from_bytes(data[:_SAMPLE]).best()
    if guess is not None and not guess.encoding.startswith(_LATIN):
        try:
            return data.decode(guess.encoding, "replace"), guess.encoding
        except LookupError:
            pass
    if western is not None:
        return western, "cp1252"
    return data.decode("cp1252", "replace"), "cp1252"


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _reads_western(text: str) -> bool:
    """Whether text decoded as windows-1252 reads as a Western language: at most a third
    of its letters outside ASCII (French or German prose: under a tenth; CJK or Cyrillic
    bytes read as cp1252: mostly accented letters)."""
    letters = len(_LETTER.findall(text))
    return letters > 0 and len(_NON_ASCII_LETTER.findall(text)) * 3 <= letters
