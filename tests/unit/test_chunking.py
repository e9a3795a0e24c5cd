"""Chunking: size bounds, overlap, speaker turns, time ranges, laziness, weighted mean."""

from __future__ import annotations

import inspect
import random
import re
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.payloads import Segment
from worker.text import chunking
from worker.text.chunking import (
    _cut,
    chunk_communication,
    chunk_segments,
    chunk_text,
    weighted_mean,
)
from worker.text.tokens import count_tokens

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "theta",
    "kappa",
    "lambda",
    "sigma",
    "omega",
]


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 20))).capitalize() + "."


def prose(rng: random.Random, paragraphs: int) -> str:
    return "\n\n".join(
        " ".join(sentence(rng) for _ in range(rng.randint(1, 8))) for _ in range(paragraphs)
    )


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def test_text_chunks_bounded_exact_and_overlapping() -> None:
    text = prose(random.Random(1), 60)
    chunks = list(chunk_text(text, 100, 20))
    assert len(chunks) > 5
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert 0 < chunk.token_count <= 100
        assert chunk.token_count == count_tokens(chunk.text)
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        head = " ".join(words(nxt.text)[:5])
        assert head in " ".join(words(prev.text)), "next chunk starts with the previous tail"


def test_unbreakable_text_windows_by_tokens() -> None:
    text = "x" * 20_000 + " 世界😀" * 300
    chunks = list(chunk_text(text, 64, 8))
    assert all(c.token_count <= 64 for c in chunks)
    assert "\ufffd" not in "".join(c.text for c in chunks)


def test_max_input_tokens_cap() -> None:
    chunks = list(chunk_text(prose(random.Random(2), 400), 100_000, 0))
    assert all(c.token_count <= 8191 for c in chunks) and len(chunks) > 1


def segs(spec: list[tuple[str | None, int, int, str]]) -> list[Segment]:
    return [Segment(speaker=s, start_ms=a, end_ms=b, text=t) for s, a, b, t in spec]


def test_speaker_turns_start_new_chunks() -> None:
    rng = random.Random(3)
    long_a = " ".join(sentence(rng) for _ in range(8))
    long_b = " ".join(sentence(rng) for _ in range(8))
    chunks = list(
        chunk_segments(segs([("Ann", 0, 1000, long_a), ("Bob", 1000, 2000, long_b)]), 200, 20)
    )
    assert [c.speakers for c in chunks] == [("Ann",), ("Bob",)]
    assert chunks[0].text.startswith("Ann: ") and chunks[1].text.startswith("Bob: ")
    assert (chunks[0].start_ms, chunks[0].end_ms, chunks[1].start_ms) == (0, 1000, 1000)


def test_tiny_turns_merge_and_record_speakers() -> None:
    rng = random.Random(4)
    spec = [
        ("Ann", 0, 500, "Hi."),
        ("Bob", 500, 900, "Hello."),
        ("Cy", 900, 5000, " ".join(sentence(rng) for _ in range(6))),
    ]
    first = next(chunk_segments(segs(spec), 200, 20))
    assert first.speakers == ("Ann", "Bob", "Cy")
    assert first.speaker == "Cy"  # dominant by tokens
    assert first.text.splitlines()[:2] == ["Ann: Hi.", "Bob: Hello."]
    assert (first.start_ms, first.end_ms) == (0, 5000)


def test_long_turn_split_with_overlap_and_interpolated_times() -> None:
    text = " ".join(sentence(random.Random(5)) for _ in range(200))
    chunks = list(chunk_segments(segs([("Ann", 10_000, 110_000, text)]), 128, 16))
    assert len(chunks) > 5
    assert all(c.token_count <= 128 and c.speaker == "Ann" for c in chunks)
    assert chunks[0].start_ms == 10_000 and chunks[-1].end_ms == 110_000
    starts = [c.start_ms for c in chunks]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        assert prev.end_ms is not None and nxt.start_ms is not None
        assert nxt.start_ms >= prev.end_ms - 1
        assert " ".join(words(nxt.text)[1:5]) in " ".join(words(prev.text))  # overlap


def test_untimed_segments_give_untimed_chunks() -> None:
    chunk = next(chunk_segments([Segment(speaker="Ann", text="Plain text line.")], 64, 8))
    assert chunk.start_ms is None and chunk.end_ms is None and chunk.speaker == "Ann"


class CountingIterator:
    def __init__(self, items: Iterator[Segment]) -> None:
        self.items, self.pulled = items, 0

    def __iter__(self) -> CountingIterator:
        return self

    def __next__(self) -> Segment:
        item = next(self.items)
        self.pulled += 1
        return item


def synthetic(total_chars: int) -> Iterator[Segment]:
    rng, size, i = random.Random(6), 0, 0
    while size < total_chars:
        text = " ".join(sentence(rng) for _ in range(rng.randint(1, 4)))
        size += len(text)
        yield Segment(
            speaker=f"S{i % 4}" if i % 3 == 0 else "Main",
            start_ms=i * 1000,
            end_ms=i * 1000 + 900,
            text=text,
        )
        i += 1


def test_large_transcript_is_chunked_lazily() -> None:
    source = CountingIterator(synthetic(2_000_000))
    chunks = chunk_segments(source, 512, 64)
    assert inspect.isgenerator(chunks)
    assert source.pulled == 0
    first = next(chunks)
    assert first.index == 0 and source.pulled < 100  # only the first chunk's worth pulled
    count, last_end = 1, first.end_ms
    for chunk in chunks:
        assert chunk.token_count <= 512
        count, last_end = count + 1, chunk.end_ms
    assert source.pulled > 10_000 and count > 500 and last_end is not None


def test_communication_subject_leads() -> None:
    chunks = chunk_communication("Budget review", prose(random.Random(7), 30), 100, 10)
    assert chunks[0].text.startswith("Budget review")
    assert not chunks[1].text.startswith("Budget review")
    assert chunk_communication(None, "", 100, 10) == []
    assert chunk_communication("Only a subject", None, 100, 10)[0].text == "Only a subject"


def test_chunk_hash_is_text_sha256() -> None:
    import hashlib

    chunk = next(chunk_text("Some text.", 64, 8))
    assert chunk.content_hash == hashlib.sha256(b"Some text.").hexdigest()


def test_invalid_budgets() -> None:
    with pytest.raises(ValueError):
        list(chunk_text("x", 2, 0))
    with pytest.raises(ValueError):
        list(chunk_text("x", 64, -1))


def test_weighted_mean() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    mean = weighted_mean(vectors, [3, 1])
    assert mean.dtype == np.float32
    assert np.isclose(np.linalg.norm(mean), 1.0)
    assert np.allclose(mean, np.array([3, 1]) / np.sqrt(10))
    assert np.allclose(weighted_mean(vectors, [0, 0]), np.array([1, 1]) / np.sqrt(2))
    with pytest.raises(ValueError):
        weighted_mean(vectors, [1])


def short_words(text: str, target: int) -> set[str]:
    """Words that no token window may cut (a word longer than the budget must be cut)."""
    return {w for w in words(text) if count_tokens(" " + w) <= max(1, target // 8)}


text_strategy = st.lists(
    st.one_of(
        st.sampled_from(WORDS),
        st.text(alphabet=st.characters(categories=("L", "N")), min_size=1, max_size=30),
        st.sampled_from([".", "!", "\n", "\n\n", "  ", "😀", "世界"]),
    ),
    max_size=120,
).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(
    text_strategy, st.integers(min_value=8, max_value=80), st.integers(min_value=0, max_value=40)
)
def test_chunks_cover_all_words(text: str, target: int, overlap: int) -> None:
    chunks = list(chunk_text(text, target, overlap))
    assert all(c.token_count <= target for c in chunks)
    assert all(c.token_count == count_tokens(c.text) for c in chunks)
    joined = " ".join(c.text for c in chunks)
    covered = set(words(joined))
    assert short_words(text, target) <= covered


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["Ann", "Bob", None]), text_strategy), max_size=12),
    st.integers(min_value=8, max_value=80),
)
def test_segment_chunks_cover_all_words(spec: list[tuple[str | None, str]], target: int) -> None:
    segments = [
        Segment(speaker=s, start_ms=i, end_ms=i + 1, text=t) for i, (s, t) in enumerate(spec)
    ]
    chunks = list(chunk_segments(segments, target, target // 4))
    assert all(c.token_count <= target for c in chunks)
    assert all(c.token_count == count_tokens(c.text) for c in chunks)
    covered = set(words(" ".join(c.text for c in chunks)))
    assert short_words(" ".join(t for _, t in spec), target) <= covered


# Text where cl100k's pretokens are tricky: contractions, punctuation runs that swallow
# newlines, digits in threes, whitespace runs, no-space scripts, combining marks, emoji.
TRICKY = [
    *"abcXYZ019 .,;:!?'\"()-_/@#",
    " ",
    " ",
    " ",
    "\n",
    "\t",
    "\r",
    "\u00a0",
    "\u3000",
    "é",
    "ß",
    "世",
    "界",
    "\u0301",
    "😀",
    "👍🏽",
    "'s",
    "'ll",
    "n't",
    "...",
    "—",
]
hostile_text = st.lists(st.sampled_from(TRICKY), max_size=60).map("".join)


@settings(max_examples=400, deadline=None)
@given(hostile_text)
def test_counts_add_up_at_every_cut(text: str) -> None:
    """What the chunker's counting rests on (``chunking._cut``): at a space that follows a
    non-space character, cl100k's count of a text is the sum of its two sides'."""
    cuts = [at for at in range(len(text) + 1) if _cut(text, at)]
    assert 0 in cuts and len(text) in cuts
    for at in cuts:
        assert count_tokens(text) == count_tokens(text[:at]) + count_tokens(text[at:]), at


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Ann", "Bob", "Dr. O'Neil", None]),
            st.lists(hostile_text, min_size=1, max_size=6).map(" ".join),
        ),
        max_size=10,
    ),
    st.integers(min_value=8, max_value=60),
    st.integers(min_value=0, max_value=30),
)
def test_segment_chunk_counts_are_exact_on_hostile_text(
    spec: list[tuple[str | None, str]], target: int, overlap: int
) -> None:
    """Every join the chunker makes (turns, overlap, pieces of a long turn, speaker
    names) against cl100k itself."""
    segments = [Segment(speaker=s, text=t) for s, t in spec if t.strip()]
    for c in chunk_segments(segments, target, overlap):
        assert c.token_count == count_tokens(c.text) and c.token_count <= target


def test_chunking_encodes_the_text_about_once() -> None:
    """A chunk's count comes from its parts' counts plus the text around the joins
    (``chunking._count``), not from encoding the chunk again: the encoder sees a
    transcript about once (twice or more before: every chunk was encoded whole again)."""
    segments = list(synthetic(200_000))
    size = sum(len(s.text) for s in segments)
    encoding = chunking.get_encoding()
    seen = 0

    class Counting:
        def __getattr__(self, name: str) -> object:
            return getattr(encoding, name)

        def encode_ordinary(self, text: str) -> list[int]:
            nonlocal seen
            seen += len(text)
            return encoding.encode_ordinary(text)

    original = chunking.get_encoding
    chunking.get_encoding = lambda: Counting()  # type: ignore[assignment]
    try:
        chunks = list(chunk_segments(segments, 512, 64))
    finally:
        chunking.get_encoding = original
    assert all(c.token_count == count_tokens(c.text) for c in chunks)
    assert seen < 1.5 * size, seen / size
