"""``decode_embeddings``: base64 rows decoded from their span of the body (never as Python
strings), with the same answers and the same strictness as parsing the body whole."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest

from worker.embedding import EmbeddingResponseError, decode_embeddings
from worker.embedding.providers import EmbeddingsDecoder

DIM = 8


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def b64(v: np.ndarray) -> str:
    return base64.b64encode(v.astype("<f4").tobytes()).decode()


def body(items: list[dict[str, Any]], **extra: Any) -> bytes:
    doc = {"object": "list", "data": items, "model": "m", "usage": {"prompt_tokens": 7}}
    return json.dumps({**doc, **extra}).encode()


def items(vs: np.ndarray, fmt: str = "base64") -> list[dict[str, Any]]:
    return [
        {"object": "embedding", "index": i, "embedding": b64(v) if fmt == "base64" else v.tolist()}
        for i, v in enumerate(vs)
    ]


@pytest.mark.parametrize("fmt", ["base64", "float"])
def test_round_trip(fmt: str) -> None:
    vs = vectors(5)
    out, tokens = decode_embeddings(body(items(vs, fmt)), 5, DIM)
    np.testing.assert_array_equal(out, vs)
    assert tokens == 7 and out.dtype == np.float32


def test_compact_and_spaced_json_alike() -> None:
    vs = vectors(3, 1)
    doc = {"data": items(vs), "usage": {"prompt_tokens": 3}}
    for raw in (json.dumps(doc, separators=(",", ":")), json.dumps(doc, indent=2)):
        np.testing.assert_array_equal(decode_embeddings(raw.encode(), 3, DIM)[0], vs)


def test_escaped_slashes_still_decode() -> None:
    """A proxy that escapes ``/`` as ``\\/``: the row is not blanked, JSON unescapes it."""
    vs = vectors(40, 2)  # some rows' base64 holds a '/'
    raw = body(items(vs)).replace(b"/", b"\\/")
    np.testing.assert_array_equal(decode_embeddings(raw, 40, DIM)[0], vs)


def test_an_embedding_key_outside_the_data_falls_back_to_the_whole_body() -> None:
    vs = vectors(2, 3)
    nested = items(vs)
    nested[0] = {"meta": {"embedding": "QUJD"}, **nested[0]}
    for raw in (body(items(vs), extra={"embedding": "QUJD"}), body(nested)):
        np.testing.assert_array_equal(decode_embeddings(raw, 2, DIM)[0], vs)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["data"].pop(), "expected 3 embeddings, got 2"),
        (lambda d: d["data"][1].update(index=2), "position 1 has index 2"),
        (lambda d: d["data"][2].update(embedding=d["data"][2]["embedding"][:-8]), "dimensions"),
        (lambda d: d["data"][0].update(embedding=""), "embedding 0: 0 dimensions"),
        (lambda d: d["data"][1].update(embedding="A"), "invalid base64"),
        (lambda d: d["data"][1].update(embedding="@@@@"), "invalid base64"),
        (lambda d: d["data"][1].update(embedding=None), "unexpected type"),
        (lambda d: d["data"][1].update(embedding=b64(np.full(DIM, np.nan))), "non-finite"),
        (lambda d: d.pop("data"), "no 'data' list"),
    ],
)
def test_bad_bodies_are_refused(mutate: Any, message: str) -> None:
    doc = json.loads(body(items(vectors(3, 4))))
    mutate(doc)
    with pytest.raises(EmbeddingResponseError, match=message):
        decode_embeddings(json.dumps(doc).encode(), 3, DIM)


def test_not_json() -> None:
    with pytest.raises(EmbeddingResponseError, match="not valid JSON"):
        decode_embeddings(b'{"data": [', 1, DIM)


@pytest.mark.parametrize("piece", [1, 7, 13, 64, 1000])
@pytest.mark.parametrize("fmt", ["base64", "float", "mixed"])
def test_fed_in_pieces_as_the_body_arrives(piece: int, fmt: str) -> None:
    """Any cut of the body (inside a key, a row, the whitespace) gives the same rows; a
    float row between base64 rows moves the decoded ones to their items."""
    vs = vectors(6, 5)
    its = items(vs, "float" if fmt == "float" else "base64")
    if fmt == "mixed":
        its[2]["embedding"] = vs[2].tolist()
    raw = json.dumps({"data": its, "usage": {"prompt_tokens": 1}}, indent=1).encode()
    decoder = EmbeddingsDecoder(6, DIM)
    for i in range(0, len(raw), piece):
        decoder.feed(raw[i : i + piece])
    out, tokens = decoder.finish()
    np.testing.assert_array_equal(out, vs)
    assert tokens == 1
    assert decoder.rows == (0 if fmt == "float" else 5 if fmt == "mixed" else 6)


def test_only_a_row_at_a_time_is_held() -> None:
    """What the decoder keeps of a body is its JSON without the rows."""
    vs = vectors(50, 6)
    raw = body(items(vs))
    decoder = EmbeddingsDecoder(50, DIM)
    for i in range(0, len(raw), 100):
        decoder.feed(raw[i : i + 100])
    assert sum(len(p) for p in decoder._rest) < len(raw) - 50 * len(b64(vs[0]))


@pytest.mark.parametrize("fmt", ["base64", "float", "mixed"])
def test_decoded_into_the_given_rows(fmt: str) -> None:
    """With ``into`` (the batcher's callers' rows, scattered over arrays of their own)
    every row lands in its destination and no array of the decoder's own is returned."""
    vs = vectors(5, 8)
    its = items(vs, "float" if fmt == "float" else "base64")
    if fmt == "mixed":
        its[1]["embedding"] = vs[1].tolist()  # a float row among decoded ones
    first, second = np.zeros((4, DIM), np.float32), np.zeros((3, DIM), np.float32)
    into = [second[2], first[0], first[3], second[0], first[1]]
    out, tokens = decode_embeddings(body(its), 5, DIM, into)
    assert out is None and tokens == 7
    np.testing.assert_array_equal(np.stack(into), vs)
    np.testing.assert_array_equal(first[2], np.zeros(DIM))  # rows not given: untouched
    np.testing.assert_array_equal(second[1], np.zeros(DIM))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["data"].pop(), "expected 3 embeddings, got 2"),
        (lambda d: d["data"][2].update(embedding=b64(np.full(DIM, np.inf))), "non-finite"),
        (lambda d: d["data"][0].update(embedding=[float("nan")] * DIM), "non-finite"),
        (lambda d: d["data"][1].update(embedding="@@@@"), "invalid base64"),
    ],
)
def test_decoding_into_rows_is_as_strict(mutate: Any, message: str) -> None:
    """Refused as without ``into``: the caller learns its rows hold no answer."""
    doc = json.loads(body(items(vectors(3, 4))))
    mutate(doc)
    into = list(np.zeros((3, DIM), np.float32))
    with pytest.raises(EmbeddingResponseError, match=message):
        decode_embeddings(json.dumps(doc).encode(), 3, DIM, into)


def test_finite_values_of_any_size_are_accepted() -> None:
    """The non-finite check sums in float64: the largest float32 values do not overflow."""
    vs = np.full((4, DIM), np.finfo(np.float32).max, np.float32)
    vs[1] *= -1
    out, _ = decode_embeddings(body(items(vs)), 4, DIM)
    np.testing.assert_array_equal(out, vs)


def test_destinations_must_match_the_inputs() -> None:
    with pytest.raises(ValueError, match="2 destination rows for 3 inputs"):
        EmbeddingsDecoder(3, DIM, list(np.zeros((2, DIM), np.float32)))
