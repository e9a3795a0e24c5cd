"""VTT / SRT / plain transcript parsing, autodetection and the malformed-cue policy."""

from __future__ import annotations

import inspect

import pytest

from worker.text.transcripts import ParseStats, TranscriptParseError, parse_transcript

VTT = """\ufeffWEBVTT - meeting
Kind: captions

NOTE exported by the recorder,
over two lines

STYLE
::cue { color: lime }

1
00:00:01.000 --> 00:00:04.500 align:start position:10%
<v.loud Ann Lee>Hello &amp; welcome</v>

00:05.000 --> 00:07.250
Bob: Thanks, Ann.
And hello.

cue-3
01:00:08.000 --> 01:00:09.000
<v Ann Lee>One</v>
<v Bob>Two</v>
"""

SRT = """1
00:00:01,000 --> 00:00:02,500
<i>Ann:</i> hi there

2
00:00:03,000 --> 00:00:04,000
Bob: hello
second line
"""


def test_vtt_voice_tags_notes_styles_and_settings() -> None:
    stats = ParseStats()
    segments = list(parse_transcript(VTT, stats=stats))
    assert stats.format == "vtt" and stats.skipped == 0
    assert [(s.speaker, s.start_ms, s.end_ms, s.text) for s in segments] == [
        ("Ann Lee", 1000, 4500, "Hello & welcome"),
        ("Bob", 5000, 7250, "Thanks, Ann. And hello."),
        ("Ann Lee", 3_608_000, 3_609_000, "One"),
        ("Bob", 3_608_000, 3_609_000, "Two"),
    ]


def test_srt() -> None:
    segments = list(parse_transcript(SRT))
    assert [(s.speaker, s.start_ms, s.end_ms, s.text) for s in segments] == [
        ("Ann", 1000, 2500, "hi there"),
        ("Bob", 3000, 4000, "hello second line"),
    ]


def test_plain_has_speakers_and_no_times() -> None:
    text = "Ann: Good morning.\nWe start now.\n\nBob Smith: Agreed. Note: see http://x.y\n"
    segments = list(parse_transcript(text))
    assert [(s.speaker, s.text) for s in segments] == [
        ("Ann", "Good morning."),
        ("Ann", "We start now."),
        ("Bob Smith", "Agreed. Note: see http://x.y"),
    ]
    assert all(s.start_ms is None and s.end_ms is None for s in segments)


def test_autodetect_and_explicit_format() -> None:
    stats = ParseStats()
    list(parse_transcript(SRT, stats=stats))
    assert stats.format == "srt"
    stats = ParseStats()
    list(parse_transcript("just words", stats=stats))
    assert stats.format == "plain"
    assert [s.text for s in parse_transcript(SRT, "srt")] == ["hi there", "hello second line"]


def test_lazy_generator() -> None:
    result = parse_transcript(VTT)
    assert inspect.isgenerator(result)
    pulled = 0

    def lines():  # type: ignore[no-untyped-def]
        nonlocal pulled
        for i in range(100_000):
            pulled += 1
            yield f"Speaker{i % 3}: line {i}\n"

    first = next(parse_transcript(lines(), "plain"))
    assert first.text == "line 0" and pulled == 1


def test_bad_cues_skipped_and_counted() -> None:
    text = (
        SRT
        + "\n3\n00:00:09,000 --> 00:00:05,000\ninverted\n\n4\n00:61:00,000 --> 00:62:00,000\nx\n"
    )
    stats = ParseStats()
    segments = list(parse_transcript(text, stats=stats))
    assert len(segments) == 2 and stats.skipped == 2
    assert stats.first_error is not None and stats.first_error.line == 11
    assert "ends before it starts" in stats.first_error.reason


def test_strict_raises_at_first_bad_cue() -> None:
    text = "WEBVTT\n\n00:00:01.000 --> 00:00:xx.000\nbad\n"
    with pytest.raises(TranscriptParseError) as info:
        list(parse_transcript(text, strict=True))
    assert info.value.line == 3
    assert str(info.value).startswith("line 3: ")


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ("garbage\n\nmore garbage\n", "srt"),
        ("WEBVTT\n\nno timing here\n", "vtt"),
        ("1\n00:00:05,000 --> 00:00:01,000\ninverted only\n", None),
    ],
)
def test_all_cues_bad_is_an_error(text: str, fmt: str | None) -> None:
    with pytest.raises(TranscriptParseError):
        list(parse_transcript(text, fmt))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "WEBVTT\n", "\x00\x00", "-->", "<v>\n", "1\n-->\n", "a" * 10_000, "é\ud800"],
)
def test_odd_inputs_never_crash(text: str) -> None:
    for fmt in (None, "vtt", "srt", "plain"):
        try:
            for segment in parse_transcript(text, fmt):  # type: ignore[arg-type]
                assert "\x00" not in segment.text
        except TranscriptParseError:
            pass
