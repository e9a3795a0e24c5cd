"""HTML mail bodies to the text a reader sees: what is chunked and embedded.

Why: an HTML newsletter is mostly CSS, scripts, nested layout tables and tracking URLs;
embedding it as sent describes markup (issue 18: 31 visible tokens sent 19,655 to the
embedder). The stored body stays as received; only the embedded text is converted.

Why selectolax (lexbor): measured on generated mail (bench/html_mail.py, bench/NOTES.md)
it was 12-45x faster than inscriptis / html2text / trafilatura with the same text kept,
and it keeps text at any nesting depth (inscriptis via lxml lost it at depth 1000,
trafilatura dropped a Gmail reply's text as boilerplate).

What the output keeps: paragraphs (block elements end a paragraph, ``<br>`` a line),
list items as ``- `` lines, table cells separated by a space, link *text* (not URLs:
they are tokens without meaning for search), ``<blockquote>`` lines prefixed ``> `` (as
plain-text mail quotes, so quoted history is recognisable downstream), entities decoded.
Dropped: ``<head>``, ``<style>``, ``<script>``, ``<noscript>``, ``<template>``, ``<svg>``,
comments (Outlook's conditional ones too), images (tracking pixels included; alt text is
not kept), ``<pre>`` spacing (whitespace is collapsed).

Bounds (lexbor's tree building is quadratic in the depth of open elements: 10,000 nested
``<div>`` took 0.24 s, 40,000 3.4 s, 100,000 unclosed ``<div><span>`` 29 s):

* only the first :data:`MAX_HTML_CHARS` characters are converted;
* a linear pre-scan estimates the element nesting depth; over :data:`MAX_DEPTH` the body
  is converted by :func:`_flat_text` instead (a linear tag-stripping pass: text, block
  breaks, entities; no tree), so a 20 MB body of nested tags costs one regex pass.

Pure: no I/O, importable from ``worker.core``-level code and tested without servers.
"""

from __future__ import annotations

import html as _html
import re

from selectolax.lexbor import LexborHTMLParser

#: Characters of HTML converted (the rest of a longer body is not embedded; it is stored).
#: Lexbor parses 4 MB of flat paragraphs in ~0.25 s on the bench machine.
MAX_HTML_CHARS = 4_000_000
#: Estimated element nesting depth above which the tree is not built (5,000 nested
#: elements parse in ~65 ms; real mail nests tables a few dozen deep).
MAX_DEPTH = 2_000

_DROP = ["head", "style", "script", "noscript", "template", "svg", "object", "iframe", "img"]
_BLOCKS = (
    "p,div,section,article,header,footer,main,aside,nav,h1,h2,h3,h4,h5,h6,table,tr,ul,ol,"
    "dl,dt,dd,pre,address,hr,center,form,fieldset,figure,figcaption"
)
# Private-use characters as structure marks: they cannot be in clean payload text that
# matters, and survive whitespace collapsing; replaced by newlines / prefixes at the end.
_PARA, _LINE, _QOPEN, _QCLOSE, _ITEM, _CELL = (
    "\ue000",
    "\ue001",
    "\ue002",
    "\ue003",
    "\ue004",
    "\ue005",
)
_MARKS = re.compile("([\ue000-\ue005])")
_SPACE = re.compile(r"\s+")

_VOID = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    ]
)
_OPEN = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)")
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9:-]*)[^>]*?(/?)>|<!--.*?-->", re.S)
_BLOCK_NAMES = frozenset(_BLOCKS.split(",")) | {"br", "li", "blockquote", "td", "th"}
_SKIP_NAMES = frozenset({"style", "script", "head", "title", "noscript", "template", "svg"})

_HTML_START = re.compile(r"\s*(<!doctype\s+html|<html[\s>]|<\?xml)", re.I)
_HTML_CLOSE = re.compile(
    r"</(html|head|body|div|p|span|table|tr|td|a|b|i|strong|em|ul|ol|li|blockquote|font|h[1-6])\s*>",
    re.I,
)


def looks_like_html(text: str) -> bool:
    """Whether a ``body`` sent as plain text is clearly HTML.

    The rule: after leading whitespace it starts with ``<!doctype html``, ``<html`` or
    ``<?xml``; or it starts with ``<`` and its first 4,096 characters hold a closing tag of
    a common HTML element (``</div>``, ``</p>``, ``</a>`` ...). A chat message such as
    ``<3`` or ``<@U123> hi`` has no closing tag and stays text; plain text that merely
    mentions a tag further in does not start with ``<``.
    """
    head = text[:4096].lstrip("\ufeff \t\r\n")
    if _HTML_START.match(head):
        return True
    return head.startswith("<") and _HTML_CLOSE.search(head) is not None


def nesting_depth(html: str, limit: int = MAX_DEPTH) -> int:
    """Estimated element depth (start tags minus end tags; void tags do not nest, and
    ``<div/>`` opens a div as in a browser), one linear pass; stops past ``limit``."""
    if html.count("<") - html.count("</") <= limit:
        return 0  # fewer start tags than the limit: cannot nest deeper, no scan needed
    depth = deepest = 0
    for match in _OPEN.finditer(html):
        close, name = match.group(1, 2)
        if name.lower() in _VOID:
            continue
        if close:
            depth = max(depth - 1, 0)
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def html_to_text(html: str) -> str:
    """The visible text of an HTML body with paragraph structure (see the module doc)."""
    if len(html) > MAX_HTML_CHARS:
        html = html[:MAX_HTML_CHARS]
        cut = html.rfind("<")
        if cut > html.rfind(">"):
            html = html[:cut]  # no half tag at the cut
    if nesting_depth(html) > MAX_DEPTH:
        return _flat_text(html)
    tree = LexborHTMLParser(html)
    root = tree.body
    if root is None:
        return ""
    root.strip_tags(_DROP)
    for node in root.css(_BLOCKS):
        node.insert_before(_PARA)
        node.insert_after(_PARA)
    for node in root.css("br"):
        node.insert_after(_LINE)
    for node in root.css("li"):
        node.insert_before(_ITEM)
        node.insert_after(_LINE)
    for node in root.css("td,th"):
        node.insert_after(_CELL)
    for node in root.css("blockquote"):
        node.insert_before(_QOPEN)
        node.insert_after(_QCLOSE)
    return _layout(root.text(deep=True, separator="", strip=False))


def _layout(marked: str) -> str:
    """Collapse whitespace as a browser does, then turn the marks into lines."""
    marked = _SPACE.sub(" ", marked)
    lines: list[str] = []
    current: list[str] = []
    quote = 0

    def end_line(blank: bool) -> None:
        text = "".join(current).strip()
        current.clear()
        prefix = "> " * quote
        if text:
            lines.append(prefix + text)
        if blank and lines and lines[-1].strip("> "):
            lines.append(prefix.rstrip())

    for piece in _MARKS.split(marked):
        if piece == _PARA:
            end_line(blank=True)
        elif piece == _LINE:
            end_line(blank=False)
        elif piece == _ITEM:
            end_line(blank=False)
            current.append("- ")
        elif piece == _CELL:
            current.append(" ")
        elif piece in (_QOPEN, _QCLOSE):
            end_line(blank=True)
            quote = quote + 1 if piece == _QOPEN else max(quote - 1, 0)
        else:
            current.append(piece)
    end_line(blank=False)
    while lines and not lines[-1].strip(">").strip():
        lines.pop()
    while lines and not lines[0].strip(">").strip():
        lines.pop(0)
    return "\n".join(lines)


def _flat_text(html: str) -> str:
    """Linear fallback for bodies too deep to build a tree: text between tags, a line
    break at block tags, style/script/head content skipped, entities decoded."""
    out: list[str] = []
    skip: str | None = None
    pos = 0
    for match in _TAG.finditer(html):
        if skip is None:
            out.append(html[pos : match.start()])
        pos = match.end()
        name = (match.group(2) or "").lower()
        if not name:
            continue  # a comment
        if skip is not None:
            if match.group(1) and name == skip:
                skip = None
            continue
        if name in _SKIP_NAMES and not match.group(1) and not match.group(3):
            skip = name
        elif name in _BLOCK_NAMES:
            out.append(_LINE)
    if skip is None:
        out.append(html[pos:])
    text = _html.unescape("".join(out))
    return _layout(text)
