"""The labelled query set of ``bench.search_quality``: deterministic, and every label
points at a real item whose text (and whose chunk, as the worker cuts it) holds the terms."""

from __future__ import annotations

import math
import re
import uuid

import pytest

from bench import corpus as corpus_mod
from bench import search_quality as sq
from worker.core.payloads import Segment
from worker.core.settings import Settings
from worker.text.chunking import chunk_segments

WS = uuid.UUID("00000000-0000-4000-8000-0000000000b1")
SAMPLES = {"communication": 8, "transcript": 6, "media": 6}


@pytest.fixture(scope="module")
def corpus() -> corpus_mod.Corpus:
    return corpus_mod.build("small", WS)


@pytest.fixture(scope="module")
def queries(corpus: corpus_mod.Corpus) -> list[sq.Query]:
    return sq.build_queries(corpus, SAMPLES)


def _items(corpus: corpus_mod.Corpus) -> dict[tuple[str, str], dict]:
    out = {("communication", e["external_id"]): e for e in corpus.emails}
    out.update({("transcript", m["external_id"]): m for m in corpus.meetings})
    out.update({("media", m["external_id"]): m for m in corpus.media})
    return out


def test_deterministic(corpus: corpus_mod.Corpus, queries: list[sq.Query]) -> None:
    assert sq.build_queries(corpus_mod.build("small", WS), SAMPLES) == queries
    assert sq.build_queries(corpus, SAMPLES, seed=sq.SEED + 1) != queries


def test_shape(queries: list[sq.Query]) -> None:
    assert len(queries) == sum(SAMPLES.values()) * len(sq.TYPES)
    assert len({q.qid for q in queries}) == len(queries)
    for kind, n in SAMPLES.items():
        for qtype in sq.TYPES:
            assert sum(1 for q in queries if q.kind == kind and q.type == qtype) == n
    # the five queries of an anchor share its label
    by_anchor: dict[str, set] = {}
    for q in queries:
        by_anchor.setdefault(q.qid.rsplit("-", 1)[0], set()).add((q.item, q.segment, q.terms))
    assert all(len(v) == 1 for v in by_anchor.values())


def test_labels_point_at_real_items(corpus: corpus_mod.Corpus, queries: list[sq.Query]) -> None:
    items = _items(corpus)
    for q in queries:
        item = items[(q.kind, q.item)]
        if q.kind == "communication":
            assert q.segment is None
            text = item["body"]
        else:
            text = item["segments"][q.segment]["text"]
        assert q.anchor in text.replace("\n\n", " ")
        assert len(q.terms) == 3 and set(q.terms) <= set(sq.words(q.anchor))
        assert all(len(t) >= sq.MIN_TERM for t in q.terms)


def test_terms_label_one_unit(corpus: corpus_mod.Corpus, queries: list[sq.Query]) -> None:
    """No other e-mail, turn or segment holds all three key terms."""
    units = [(u, set(sq.words(u.text))) for u in sq._units(corpus)]
    for q in queries:
        holders = [u for u, ws in units if set(q.terms) <= ws]
        assert [(u.kind, u.item, u.segment) for u in holders] == [(q.kind, q.item, q.segment)]


def test_query_texts(corpus: corpus_mod.Corpus, queries: list[sq.Query]) -> None:
    vocab = {w for u in sq._units(corpus) for w in sq.words(u.text)}
    common = set(corpus_mod._COMMON)
    # paraphrases and frame words are not corpus words (else they are not paraphrases)
    assert not set(sq.SYNONYMS.values()) & vocab
    assert set(sq.SYNONYMS) <= common
    for frame in sq.QUESTION_FRAMES:
        assert set(sq.words(re.sub(r"\{\w+\}", " ", frame))) <= sq.PG_STOPWORDS
    for frame in (*sq.MIXED_FRAMES, *sq.PARAPHRASE_FRAMES):
        assert not (set(sq.words(re.sub(r"\{\w+\}", " ", frame))) - sq.PG_STOPWORDS) & vocab
    for q in queries:
        qw = sq.words(q.text)
        t1, t2, t3 = q.terms
        if q.type == "exact":
            assert qw == list(q.terms)
        elif q.type == "question":  # all its content words are the anchor's
            content = set(qw) - sq.PG_STOPWORDS
            assert {t1, t2} < content <= set(sq.words(q.anchor))
        elif q.type == "mixed":  # two key terms; its other content words are not the corpus's
            content = set(qw) - sq.PG_STOPWORDS
            assert t1 in qw and t2 in qw and t3 not in qw
            assert not (content - {t1, t2}) & vocab
        elif q.type == "paraphrase":
            assert [w for w in qw if w in q.terms] == [t1]
            assert not set(qw) & (set(q.terms) - {t1})
        else:
            assert q.type == "typo"
            assert len(qw) == 3 and not set(qw) & vocab
            assert all(sorted(a) == sorted(b) and a != b for a, b in zip(qw, q.terms, strict=True))


def test_anchor_lands_in_a_chunk(corpus: corpus_mod.Corpus, queries: list[sq.Query]) -> None:
    """As the worker chunks a meeting or a media item (default chunk size and overlap),
    some chunk holds all the key terms: the label resolves to a stored chunk."""
    settings = Settings()
    items = _items(corpus)
    checked = 0
    for q in queries:
        if q.kind == "communication" or q.type != "exact":
            continue
        segments = [Segment(**s) for s in items[(q.kind, q.item)]["segments"]]
        chunks = chunk_segments(segments, settings.chunk_tokens, settings.chunk_overlap_tokens)
        assert any(set(q.terms) <= set(sq.words(c.text)) for c in chunks), q.qid
        checked += 1
    assert checked == SAMPLES["transcript"] + SAMPLES["media"]


def test_rank_metrics() -> None:
    m = sq.rank_metrics(["x", "a", "y", "b"], {"a", "b"})
    assert m["hit"] == 1.0 and m["recall"] == 1.0 and m["rr"] == 0.5
    ideal = 1 + 1 / math.log2(3)
    assert m["ndcg"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)
    miss = sq.rank_metrics([f"n{i}" for i in range(10)] + ["a"], {"a"})
    assert miss == {"hit": 0.0, "recall": 0.0, "rr": 0.0, "ndcg": 0.0}
    assert sq.rank_metrics([], {"a"})["hit"] == 0.0
    assert sq.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5


def test_typo_swaps_two_letters() -> None:
    import random

    rng = random.Random(1)
    for word in ["abcdef", "aabbcc", "xyzzy", "hello"]:
        t = sq.typo(word, rng)
        assert t != word and t[0] == word[0] and sorted(t) == sorted(word)
