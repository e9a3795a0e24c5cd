"""Pure, token-aware chunking (cl100k_base) of text and of speaker-timed segments.

Guarantees, for any input: every chunk's ``token_count`` is the exact cl100k count of its
``text`` (BPE counts are not additive across an arbitrary join: a chunk's count is its
parts' counts only between cuts where cl100k's are, plus the text around its joins, encoded:
see ``_cut``) and never exceeds ``min(target_tokens, MAX_INPUT_TOKENS)``; no input text is
dropped (whitespace aside); chunks are produced lazily from lazily consumed input.

How text is cut: paragraphs, then sentences, then - for a sentence longer than the budget -
token windows cut on character boundaries. Pieces are packed greedily up to the target;
when a chunk boundary falls inside one run of text (or one speaker's turn), the next chunk
starts with the last ``overlap_tokens`` of the previous one (snapped to a word start) so a
thought split across chunks is still retrievable. Overlap is capped at half the target so
every chunk carries at least as much new text as repeated text.

Transcripts: a speaker change starts a new chunk unless the current one is tiny
(< target/4), in which case turns are merged and listed in ``speakers``. Every turn is
written ``"Speaker: ..."`` (also in single-speaker chunks: the name is then searchable).
A long turn is windowed with overlap and its times are interpolated by character position.
``start_ms``/``end_ms`` cover the chunk's new content; untimed segments give ``None``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import numpy as np

from worker.core.field_checks import clean_text
from worker.core.payloads import Segment
from worker.core.settings import MAX_INPUT_TOKENS
from worker.text.tokens import get_encoding

_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_SENTENCE = re.compile(r"(?<=[.!?;:。！？…])\s+|\n\s*")
_CHARS_PER_TOKEN_MAX = 10  # beyond this many chars per budget token, skip the encode attempt
_MIN_TARGET = 8
# A part shorter than this is encoded with the text around it (``_count``): its interior
# would save less than the two extra encodes that find its count.
_MIN_INTERIOR_CHARS = 32


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    text: str
    token_count: int
    content_hash: str
    speaker: str | None = None
    speakers: tuple[str, ...] = ()
    start_ms: int | None = None
    end_ms: int | None = None
    position: Mapping[str, Any] | None = None  # a document chunk's page/slide/sheet/heading


@dataclass(slots=True)
class _Part:
    speaker: str | None
    text: str
    tokens: int
    start_ms: int | None
    end_ms: int | None
    sep: str  # joiner placed before this part inside its turn


def _encode(text: str) -> list[int]:
    return get_encoding().encode_ordinary(text)


def _windows(text: str, limit: int) -> Iterator[tuple[str, int, int]]:
    """Cut ``text`` into consecutive pieces of <= ``limit`` tokens on character boundaries
    (byte arithmetic: ``decode_with_offsets`` is a slow Python loop)."""
    encoding = get_encoding()
    data = text.encode()
    tokens = encoding.encode_ordinary(text)
    pieces = encoding.decode_tokens_bytes(tokens)
    ends = list(accumulate(len(t) for t in pieces))
    a, n, pos, chars = 0, len(tokens), 0, 0
    while a < n and pos < len(data):
        b = min(a + limit, n)
        # Prefer to cut before a token that starts a word, if one is in the window's 2nd half.
        b = next((k for k in range(b, a + limit // 2, -1) if k >= n or pieces[k][:1].isspace()), b)
        for _ in range(64):  # each pass shrinks the window; one or two suffice in practice
            end = ends[b - 1] if b < n else len(data)
            while end < len(data) and (data[end] & 0xC0) == 0x80:
                end += 1  # never cut inside a character
            piece = data[pos:end].decode()
            count = len(encoding.encode_ordinary(piece))
            if count <= limit or b - a <= 1:
                break
            b = min(b - 1, max(a + 1, b - (count - limit)))
        yield piece, count, chars
        chars, pos, a = chars + len(piece), end, b
        while a < n and ends[a] <= pos:
            a += 1


def _split(text: str, limit: int, level: int = 0) -> Iterator[tuple[str, int, int]]:
    """Pieces (text, tokens, char offset) of <= ``limit`` tokens whose concatenation is
    ``text``: whole text, else paragraphs, else sentences, else token windows."""
    if len(text) <= limit * _CHARS_PER_TOKEN_MAX:
        count = len(_encode(text))
        if count <= limit:
            yield text, count, 0
            return
    if level >= 2:
        yield from _windows(text, limit)
        return
    pattern = _PARAGRAPH if level == 0 else _SENTENCE
    start = 0
    for match in pattern.finditer(text):
        end = match.end()
        if end >= len(text):
            break
        if end > start:
            for piece, count, offset in _split(text[start:end], limit, level + 1):
                yield piece, count, start + offset
            start = end
    if start == 0 and level < 2:
        yield from _split(text, limit, level + 1)
        return
    for piece, count, offset in _split(text[start:], limit, level + 1):
        yield piece, count, start + offset


class _Packer:
    """Greedy packing of parts into chunks, with overlap inside a turn."""

    def __init__(self, target: int, overlap: int) -> None:
        if target < _MIN_TARGET:
            raise ValueError(f"target_tokens must be at least {_MIN_TARGET}")
        if overlap < 0:
            raise ValueError("overlap_tokens must not be negative")
        self.target = min(target, MAX_INPUT_TOKENS)
        self.overlap = min(overlap, self.target // 2)
        self.piece_limit = self.target - self.overlap
        self.parts: list[_Part] = []
        self.estimate = 0
        self.carry: tuple[str | None, str] | None = None  # (speaker, overlap text)
        self.index = 0
        self._prefix_cost: dict[str, int] = {}

    def _prefix(self, speaker: str | None) -> int:
        if speaker is None:
            return 0
        cost = self._prefix_cost.get(speaker)
        if cost is None:
            cost = len(_encode(f"{speaker}: ")) + 1
            if len(self._prefix_cost) < 4096:
                self._prefix_cost[speaker] = cost
        return cost

    def add(self, part: _Part) -> Iterator[Chunk]:
        if self.parts:
            last = self.parts[-1].speaker
            cost = part.tokens + (1 if part.sep else 0)
            if part.speaker != last:
                if self.estimate >= self.target / 4:
                    yield from self.flush(carry=False)
                else:
                    cost += self._prefix(part.speaker)
            if self.parts and self.estimate + cost > self.target:
                yield from self.flush(carry=part.speaker == last)
            if self.parts:
                self.parts.append(part)
                self.estimate += cost
                return
        self.estimate = self._prefix(part.speaker) + part.tokens
        if self.carry is not None and self.carry[0] == part.speaker:
            self.estimate += self.overlap + 1
        else:
            self.carry = None
        part.sep = ""
        self.parts.append(part)

    def flush(self, carry: bool = False) -> Generator[Chunk, None, None]:
        if not self.parts:
            return
        parts, lead = self.parts, self.carry[1] if self.carry else ""
        self.parts, self.estimate, self.carry = [], 0, None
        body = yield from self._emit(parts, lead, prefixed=True)
        if carry and self.overlap:
            self.carry = (parts[-1].speaker, self._tail(body))

    def _emit(self, parts: list[_Part], lead: str, prefixed: bool) -> Generator[Chunk, None, str]:
        """Emit ``parts`` as one chunk, or split them if the exact count is over target.
        Returns the last emitted turn's body (source of the next overlap)."""
        text, body, placed = _render(parts, lead, prefixed)
        if len(parts) == 1 and text == parts[0].text:
            count = parts[0].tokens  # exact already: the piece was counted as this very text
        else:
            count = _count(text, placed)
        if count > self.target:
            if len(parts) > 1:
                half = len(parts) // 2
                yield from self._emit(parts[:half], lead, prefixed)
                return (yield from self._emit(parts[half:], "", prefixed))
            if lead:
                return (yield from self._emit(parts, "", prefixed))
            if prefixed:
                return (yield from self._emit(parts, "", False))  # piece alone fits by design
            for piece, n, _ in _windows(text, self.target):  # unreachable safety net
                yield _chunk(self.index, piece, n, parts)
                self.index += 1
            return body
        if text:
            yield _chunk(self.index, text, count, parts)
            self.index += 1
        return body

    def _tail(self, body: str) -> str:
        """The last ``overlap`` tokens of ``body``, starting at a word boundary."""
        encoding = get_encoding()
        snippet = body[-self.overlap * 8 :]
        tokens = encoding.encode_ordinary(snippet)
        if len(tokens) <= self.overlap:
            return snippet.strip()
        head = encoding.decode_bytes(tokens[: len(tokens) - self.overlap])
        tail = snippet.encode()[len(head) :].decode("utf-8", "ignore")
        if tail and not tail[0].isspace() and not head[-1:].isspace():
            space = re.search(r"\s\S", tail)  # drop the partial word the cut landed in
            if space is not None:
                tail = tail[space.start() :]
        return tail.strip()


def _render(
    parts: list[_Part], lead: str, prefixed: bool
) -> tuple[str, str, list[tuple[int, _Part]]]:
    """(chunk text, body of the last turn, where each part's text starts in the chunk
    text: a part whose leading whitespace was stripped starts before its first kept
    character)."""
    turns: list[str] = []
    placed: list[tuple[int, _Part]] = []
    size = 0  # len("\n".join(turns))
    body = ""
    i = 0
    while i < len(parts):
        speaker, pieces = parts[i].speaker, [lead + " "] if (lead and i == 0) else []
        at = len(pieces[0]) if pieces else 0
        offsets: list[tuple[int, _Part]] = []  # in the turn's unstripped body
        j = i
        while j < len(parts) and parts[j].speaker == speaker:
            piece = parts[j].sep + parts[j].text if pieces else parts[j].text
            offsets.append((at + len(piece) - len(parts[j].text), parts[j]))
            pieces.append(piece)
            at += len(piece)
            j += 1
        joined = "".join(pieces)
        body = joined.strip()
        if body:
            head = f"{speaker}: " if speaker is not None and prefixed else ""
            start = size + (1 if turns else 0) + len(head)  # where the body starts
            shift = len(joined) - len(joined.lstrip())
            placed += [(start - shift + o, part) for o, part in offsets]
            turns.append(head + body)
            size = start + len(body)
        i = j
    return "\n".join(turns), body, placed


def _cut(text: str, at: int) -> bool:
    """Whether cl100k's count of ``text`` is the sum of the counts of ``text[:at]`` and
    ``text[at:]``: at either end, and where a space follows a non-space character.

    Why this holds: cl100k first splits text into pretokens with a regular expression and
    encodes each pretoken on its own. In its pattern, a pretoken that holds a space after
    another character is whitespace only, so such a space always starts a pretoken; and
    no part of the pattern looks behind, or ahead past whitespace, so each side splits
    as it would alone. (``tests/unit/test_chunking.py`` checks it on hostile text.)
    """
    return at <= 0 or at >= len(text) or (text[at] == " " and not text[at - 1].isspace())


def _interior(text: str, tokens: int) -> tuple[int, int, int] | None:
    """(a, b, tokens of ``text[a:b]``) between the first and the last cut of ``text``,
    whose count is ``tokens``; None if there is little or nothing between them."""
    if len(text) < _MIN_INTERIOR_CHARS:
        return None
    a = text.find(" ", 1)
    while a != -1 and text[a - 1].isspace():
        a = text.find(" ", a + 1)
    b = text.rfind(" ")
    while b > a and text[b - 1].isspace():
        b = text.rfind(" ", 0, b)
    if a == -1 or b <= a:
        return None
    return a, b, tokens - len(_encode(text[:a])) - len(_encode(text[b:]))


def _count(text: str, placed: list[tuple[int, _Part]]) -> int:
    """The exact cl100k count of a chunk's ``text`` without encoding all of it again: each
    part was counted when it was split off, so between its first and last cut (``_cut``)
    its tokens are known, and only the text around the joins is encoded: a word or two
    on each side, speaker names, the overlap. Half the chunker's encoding was this
    second pass. A part that is not found intact between valid cuts is encoded with the
    text around it, so the count never depends on the offsets being right."""
    total = cursor = 0
    for offset, part in placed:
        inner = _interior(part.text, part.tokens)
        if inner is None:
            continue
        a, b, tokens = inner
        start, end = offset + a, offset + b
        if (
            start < cursor
            or not (_cut(text, start) and _cut(text, end))
            or text[start:end] != part.text[a:b]
        ):
            continue
        total += len(_encode(text[cursor:start])) + tokens
        cursor = end
    return total + len(_encode(text[cursor:]))


def _chunk(index: int, text: str, count: int, parts: list[_Part]) -> Chunk:
    weight: dict[str, int] = {}
    for part in parts:
        if part.speaker is not None:
            weight[part.speaker] = weight.get(part.speaker, 0) + part.tokens
    starts = [p.start_ms for p in parts if p.start_ms is not None]
    ends = [p.end_ms for p in parts if p.end_ms is not None]
    return Chunk(
        index=index,
        text=text,
        token_count=count,
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
        speaker=max(weight, key=lambda s: weight[s]) if weight else None,  # first on ties
        speakers=tuple(weight),
        start_ms=min(starts) if starts else None,
        end_ms=max(ends) if ends else None,
    )


def chunk_text(text: str, target_tokens: int, overlap_tokens: int) -> Iterator[Chunk]:
    """Chunks of free text (paragraph/sentence aware, token windows as a last resort)."""
    packer = _Packer(target_tokens, overlap_tokens)
    for piece, count, _ in _split(clean_text(text), packer.piece_limit):
        yield from packer.add(_Part(None, piece, count, None, None, ""))
    yield from packer.flush()


def chunk_segments(
    segments: Iterable[Segment], target_tokens: int, overlap_tokens: int
) -> Iterator[Chunk]:
    """Chunks of speaker-timed segments (transcripts, media), pulling input lazily."""
    packer = _Packer(target_tokens, overlap_tokens)
    for segment in segments:
        text = clean_text(segment.text).strip()
        if not text:
            continue
        start, end, size = segment.start_ms, segment.end_ms, len(text)
        sep = " "
        for piece, count, offset in _split(text, packer.piece_limit):
            p_start = p_end = None
            if start is not None and end is not None:
                p_start = start + (end - start) * offset // size
                p_end = start + (end - start) * (offset + len(piece)) // size
            yield from packer.add(_Part(segment.speaker, piece, count, p_start, p_end, sep))
            sep = ""
    yield from packer.flush()


def chunk_communication(
    subject: str | None, body: str | None, target_tokens: int, overlap_tokens: int
) -> list[Chunk]:
    """Chunks of a message; the subject leads the first chunk (it is usually the best
    summary of what the message is about)."""
    head = clean_text(subject or "").strip()
    text = f"{head}\n\n{body}" if head and body else head or (body or "")
    return list(chunk_text(text, target_tokens, overlap_tokens))


def weighted_mean(vectors: np.ndarray, weights: Sequence[int]) -> np.ndarray:
    """Token-weighted mean of row vectors, renormalised to unit length (cosine-ready).

    Weights that are all zero fall back to a plain mean; a zero mean is returned as is.
    """
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError("vectors must be a non-empty 2-D array")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (matrix.shape[0],) or (w < 0).any():
        raise ValueError("weights must be one non-negative number per vector")
    if w.sum() == 0:
        w = np.ones_like(w)
    mean = (matrix * w[:, None]).sum(axis=0) / w.sum()
    norm = np.linalg.norm(mean)
    result = mean / norm if norm > 0 else mean
    dtype = np.asarray(vectors).dtype
    return result.astype(dtype if dtype.kind == "f" else np.float64)
