"""HTML, Markdown and plain-text documents: decoded, converted, split at headings.

* HTML goes through :func:`worker.text.html.html_to_text`, the converter e-mail bodies
  use (selectolax, measured in bench/NOTES.md; its caps on size and nesting depth apply).
  To split at ``h1``-``h3`` without a second tree, a private-use mark is put after each
  such start tag before conversion and the text is cut at the marks: a section's heading
  is the first line after its mark. Encoding: BOM, else ``<meta charset>`` in the first
  2 KiB, else UTF-8 / cp1252 as for text.
* Markdown is kept as written (its markup is short and means something to a reader) and
  split at ATX (``#``) and setext (``===``/``---`` under a line after a blank) headings
  outside fenced code; a leading YAML front matter block is not a heading.
* Text is one position (``{}``), decoded by BOM, else UTF-8, else cp1252.
"""

from __future__ import annotations

import codecs
import html as _html
import re

from worker.extract.sections import Sections, heading
from worker.extract.sniff import decode
from worker.text.html import MAX_HTML_CHARS, html_to_text

_MARK = "\ue010"
_HEADING_TAG = re.compile(r"<h[1-3](?:\s[^>]{0,1000})?>", re.I)
_META = re.compile(rb"""<meta[^>]{0,300}?charset\s*=\s*["']?([A-Za-z0-9_.:-]{1,40})""", re.I)
_TITLE = re.compile(r"<title[^>]{0,300}>([^<]{0,1000})</title", re.I)
_ATX = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_PARAGRAPHS = re.compile(r"\n[ \t\r\f\v]*\n")


def read_html(data: bytes, out: Sections) -> None:
    """HTML text into ``out``: ``{}`` before the first ``h1``-``h3``, then per heading."""
    html = _decode_html(data)
    if title := _TITLE.search(html, 0, 65_536):
        out.title = heading(_html.unescape(title.group(1))) or None
    if len(html) > MAX_HTML_CHARS:
        out.notes.append(f"html cut at {MAX_HTML_CHARS} characters (MAX_HTML_CHARS)")
        html = html[:MAX_HTML_CHARS]
    marked = _HEADING_TAG.sub(lambda tag: tag.group() + _MARK, html.replace(_MARK, ""))
    for number, piece in enumerate(html_to_text(marked).split(_MARK)):
        if number and (name := heading(piece.lstrip().split("\n", 1)[0])):
            out.start({"heading": name})
        if not _paragraphs(piece, out):
            return


def read_markdown(data: bytes, out: Sections) -> None:
    """Markdown into ``out``, split at its headings."""
    lines = decode(data).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    front = _front_matter(lines)
    fence = ""
    paragraph: list[str] = []
    index = 0
    while index < len(lines) and not out.full:
        line = lines[index]
        if fence:
            fence = "" if line.strip().startswith(fence) else fence
        elif opened := _FENCE.match(line):
            fence = opened.group(1)
        elif index >= front and len(line) <= 1000 and (atx := _ATX.match(line)):
            if name := heading(atx.group(1) or ""):
                _flush(paragraph, out)
                out.start({"heading": name})
        elif (
            index >= front
            and line.strip()
            and index + 1 < len(lines)
            and len(lines[index + 1]) <= 1000
            and _SETEXT.match(lines[index + 1])
            and (index == 0 or not lines[index - 1].strip())
        ):
            _flush(paragraph, out)
            out.start({"heading": heading(line)})
            paragraph = [line, lines[index + 1]]
            index += 2
            continue
        if not line.strip() and not fence:
            _flush(paragraph, out)
        else:
            paragraph.append(line)
        index += 1
    _flush(paragraph, out)


def read_text(data: bytes, out: Sections) -> None:
    """Plain text into one position (``{}``)."""
    _paragraphs(decode(data), out)


def _paragraphs(text: str, out: Sections) -> bool:
    return all(out.write(part) for part in _PARAGRAPHS.split(text))


def _flush(paragraph: list[str], out: Sections) -> None:
    if paragraph:
        out.write("\n".join(paragraph))
        paragraph.clear()


def _front_matter(lines: list[str]) -> int:
    """Lines of a leading YAML front matter block (``---`` ... ``---``), or 0."""
    if lines and lines[0].strip() == "---":
        for index, line in enumerate(lines[1:200], start=1):
            if line.strip() in ("---", "..."):
                return index + 1
    return 0


def _decode_html(data: bytes) -> str:
    if not data.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        declared = _META.search(data, 0, 2048)
        if declared:
            try:
                codec = codecs.lookup(declared.group(1).decode("ascii"))
            except LookupError:
                pass
            else:
                # As browsers do: latin-1 means cp1252, a utf-16 label on ASCII bytes is wrong.
                name = "cp1252" if codec.name in ("latin-1", "iso8859-1", "ascii") else codec.name
                if not name.startswith(("utf-8", "utf-16", "utf-32")):
                    return data.decode(name, "replace")
    return decode(data)
