"""Parse WebVTT, SRT and plain-text transcripts into :class:`~worker.core.payloads.Segment`.

Design decisions:

* **Streaming.** The input is walked line by line (no ``splitlines()`` copy) and segments
  are yielded as each cue completes, so a 20 MB transcript is never held twice.
* **Plain text has no clock.** ``Speaker: text`` lines become segments with
  ``start_ms = end_ms = None`` (``Segment`` allows untimed segments, paired); lines
  without a prefix continue the previous speaker. We do not invent ``0..0`` times.
* **Malformed cues are skipped, not fatal** (one bad timestamp in a two-hour meeting should
  not lose the meeting). Pass a :class:`ParseStats` to learn how many were skipped and why.
  ``strict=True`` raises :class:`TranscriptParseError` at the first bad cue instead. If a
  timed transcript yields *no* segment while cues were skipped, the input is garbage and
  :class:`TranscriptParseError` is raised at the end either way.
* Timestamps accept ``.`` or ``,`` before the milliseconds in both formats (real exports mix
  them up); minutes/seconds must be below 60 and a cue must not end before it starts.

Nothing but :class:`TranscriptParseError` escapes :func:`parse_transcript`.
"""

from __future__ import annotations

import html
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from worker.core.payloads import Segment

TranscriptFormat = Literal["vtt", "srt", "plain"]

_TS = r"(?:(\d{1,4}):)?(\d{1,2}):(\d{1,2})[.,](\d{1,3})"
_TIMING = re.compile(rf"^\s*{_TS}\s*-->\s*{_TS}(?:\s.*)?$")
_VOICE = re.compile(r"<v(?:\.[^\s>]*)?\s+([^>]+)>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")
_SPEAKER = re.compile(r"^\s*([^\W\d_][\w .'’()&/-]{0,63}?)\s*:\s+(\S.*)$")
_MAX_SPEAKER_WORDS = 5
_MAX_SPEAKER_CHARS = 128
_PEEK_LINES = 64


class TranscriptParseError(ValueError):
    """A transcript that cannot be parsed; ``line`` is 1-based (0 = the whole input).

    Only fetched content is parsed, so the failing field is ``content_url`` (what the
    ledger's ``error_field`` records).
    """

    field = "content_url"

    def __init__(self, line: int, reason: str):
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.line, self.reason))


@dataclass(slots=True)
class ParseStats:
    """Filled in while parsing: what was detected, how many cues were kept or skipped."""

    format: TranscriptFormat | None = None
    segments: int = 0
    skipped: int = 0
    first_error: TranscriptParseError | None = None


def _lines(text: str | Iterable[str]) -> Iterator[tuple[int, str]]:
    """(line number, line without EOL) pairs, lazily, for a string or an iterable of lines."""
    if isinstance(text, str):
        pos, number, size = 0, 0, len(text)
        while pos < size:
            end = text.find("\n", pos)
            if end < 0:
                end = size
            number += 1
            yield number, text[pos:end].rstrip("\r")
            pos = end + 1
    else:
        for number, line in enumerate(text, 1):
            yield number, line.rstrip("\r\n")


def _split_speaker(line: str) -> tuple[str | None, str]:
    """``"Alice Smith: hello"`` -> ("Alice Smith", "hello"); anything else -> (None, line)."""
    match = _SPEAKER.match(line)
    if match and len(match.group(1).split()) <= _MAX_SPEAKER_WORDS:
        return match.group(1).strip(), match.group(2).strip()
    return None, line.strip()


def _ms(groups: tuple[str | None, ...]) -> int:
    hours, minutes, seconds, millis = groups
    if int(minutes or 0) >= 60 or int(seconds or 0) >= 60:
        raise ValueError("minutes and seconds must be below 60")
    frac = (millis or "0").ljust(3, "0")
    return ((int(hours or 0) * 60 + int(minutes or 0)) * 60 + int(seconds or 0)) * 1000 + int(frac)


def _timing(line: str) -> tuple[int, int] | None:
    match = _TIMING.match(line)
    if match is None:
        return None
    groups = match.groups()
    return _ms(groups[:4]), _ms(groups[4:])


def _make(speaker: str | None, start: int | None, end: int | None, text: str) -> Segment:
    if speaker is not None:
        speaker = speaker[:_MAX_SPEAKER_CHARS]
    return Segment(speaker=speaker, start_ms=start, end_ms=end, text=text)


def _cue_segments(lines: list[str], start: int, end: int) -> Iterator[Segment]:
    """Text lines of one cue -> one segment per run of lines with the same speaker."""
    runs: list[tuple[str | None, list[str]]] = []
    for raw in lines:
        voice = _VOICE.search(raw)
        text = html.unescape(_TAG.sub("", raw)).strip()
        if voice:
            speaker: str | None = html.unescape(voice.group(1)).strip() or None
        else:
            speaker, text = _split_speaker(text)
            if speaker is None and runs:
                speaker = runs[-1][0]
        if not text:
            continue
        if runs and runs[-1][0] == speaker:
            runs[-1][1].append(text)
        else:
            runs.append((speaker, [text]))
    for speaker, texts in runs:
        yield _make(speaker, start, end, " ".join(texts))


def _blocks(lines: Iterator[tuple[int, str]]) -> Iterator[list[tuple[int, str]]]:
    block: list[tuple[int, str]] = []
    for number, line in lines:
        if line.strip():
            block.append((number, line))
        elif block:
            yield block
            block = []
    if block:
        yield block


def _parse_cues(
    lines: Iterator[tuple[int, str]], fmt: TranscriptFormat, strict: bool, stats: ParseStats
) -> Iterator[Segment]:
    first = True
    for block in _blocks(lines):
        head = block[0][1].lstrip("\ufeff").strip()
        if first and fmt == "vtt" and head.startswith("WEBVTT"):
            first = False
            continue
        first = False
        if fmt == "vtt" and head.split(" ", 1)[0] in ("NOTE", "STYLE", "REGION"):
            continue
        error: TranscriptParseError | None = None
        # The timing line is the first line, or the second after a cue identifier.
        index = next((i for i, (_, line) in enumerate(block[:2]) if "-->" in line), None)
        if index is None:
            error = TranscriptParseError(block[0][0], "cue has no 'start --> end' timing line")
        else:
            number, line = block[index]
            try:
                times = _timing(line)
                if times is None:
                    raise ValueError("malformed timestamps")
                if times[1] < times[0]:
                    raise ValueError("cue ends before it starts")
                segments = list(_cue_segments([text for _, text in block[index + 1 :]], *times))
            except (ValueError, ValidationError) as exc:
                reason = str(exc).splitlines()[0] if isinstance(exc, ValidationError) else str(exc)
                error = TranscriptParseError(number, f"{reason}: {line.strip()[:80]!r}")
        if error is not None:
            if strict:
                raise error
            stats.skipped += 1
            stats.first_error = stats.first_error or error
            continue
        stats.segments += len(segments)
        yield from segments


def _parse_plain(
    lines: Iterator[tuple[int, str]], strict: bool, stats: ParseStats
) -> Iterator[Segment]:
    speaker: str | None = None
    for number, line in lines:
        if not line.strip():
            continue
        found, text = _split_speaker(html.unescape(line.lstrip("\ufeff")))
        speaker = found if found is not None else speaker
        try:
            segment = _make(speaker, None, None, text)
        except ValidationError:
            error = TranscriptParseError(number, "line cannot be stored as a segment")
            if strict:
                raise error from None
            stats.skipped += 1
            stats.first_error = stats.first_error or error
            continue
        stats.segments += 1
        yield segment


def detect_format(lines: Iterable[str]) -> TranscriptFormat:
    """``WEBVTT`` header -> vtt; a ``start --> end`` timing line -> srt; else plain."""
    seen_text = False
    for line in lines:
        stripped = line.lstrip("\ufeff").strip()
        if not seen_text and stripped:
            if stripped.startswith("WEBVTT"):
                return "vtt"
            seen_text = True
        if "-->" in stripped and _TIMING.match(stripped):
            return "srt"
    return "plain"


def parse_transcript(
    text: str | Iterable[str],
    fmt: TranscriptFormat | None = None,
    *,
    strict: bool = False,
    stats: ParseStats | None = None,
) -> Iterator[Segment]:
    """Lazily parse a transcript; ``fmt=None`` autodetects from the first 64 lines."""
    stats = stats if stats is not None else ParseStats()
    lines = _lines(text)
    if fmt is None:
        peeked = list(itertools.islice(lines, _PEEK_LINES))
        fmt = detect_format(line for _, line in peeked)
        lines = itertools.chain(peeked, lines)
    if fmt not in ("vtt", "srt", "plain"):
        raise TranscriptParseError(0, f"unknown transcript format {fmt!r}")
    stats.format = fmt
    if fmt == "plain":
        yield from _parse_plain(lines, strict, stats)
        return
    yield from _parse_cues(lines, fmt, strict, stats)
    if stats.segments == 0 and stats.first_error is not None:
        raise TranscriptParseError(
            stats.first_error.line,
            f"no valid cue in the {fmt} transcript ({stats.skipped} skipped; first: "
            f"{stats.first_error.reason})",
        )
