"""The index benchmark's vector generator (bench/index/vectors.py): deterministic, unit
length, block-independent, and shaped like text embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from bench.index.vectors import BLOCK, DIM, Corpus, row_index, row_uuid, similarity_stats


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus(5000, seed=7)


def test_deterministic_and_unit_length(corpus: Corpus) -> None:
    again = Corpus(5000, seed=7)
    a, b = corpus.vectors(0, 300), again.vectors(0, 300)
    assert a.dtype == np.float32 and a.shape == (300, DIM)
    assert np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert not np.array_equal(a, Corpus(5000, seed=8).vectors(0, 300))


def test_any_row_range_is_the_same_rows(corpus: Corpus) -> None:
    whole = corpus.vectors(BLOCK - 5, BLOCK + 5)
    assert np.array_equal(whole[:5], corpus.vectors(BLOCK - 5, BLOCK))
    assert np.array_equal(whole[5:], corpus.vectors(BLOCK, BLOCK + 5))
    picked = np.array([3, BLOCK + 1, 2 * BLOCK + 7])
    assert np.array_equal(corpus.rows_at(picked)[1], corpus.vectors(BLOCK + 1, BLOCK + 2)[0])


def test_workspace_sizes(corpus: Corpus) -> None:
    assert sum(corpus.ws_rows) == 5000
    assert np.bincount(corpus.row_ws, minlength=5).tolist() == corpus.ws_rows
    assert corpus.ws_rows[-1] == 5  # 0.1 %


def test_row_ids_round_trip() -> None:
    assert [row_index(row_uuid(i)) for i in (0, 1, 99_999)] == [0, 1, 99_999]


def test_similarities_look_like_text_embeddings(corpus: Corpus) -> None:
    queries, ws = corpus.queries(40)
    stats, truth = similarity_stats(corpus, queries, ws, samples=300)
    nn, rand, top1 = stats["nearest_neighbour"], stats["random_pairs"], stats["query_top1"]
    assert 0.5 <= nn["p50"] <= 0.8  # type: ignore[index]
    assert 0.05 <= rand["mean"] <= 0.2  # type: ignore[index]
    assert 0.4 <= top1["p50"] <= 0.75  # type: ignore[index]
    # the exact neighbours are in the query's own workspace, best first
    assert all(
        corpus.row_ws[i] == w for row, w in zip(truth, ws, strict=True) for i in row if i >= 0
    )
    # no query is a copy of a stored vector
    assert stats["query_top1"]["p95"] < 0.95  # type: ignore[index]
