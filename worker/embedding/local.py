"""The offline, deterministic local embedding model: demos and tests without a network.

Why not a real model: the worker must run with no key and no download (the README's first
command), and tests need vectors whose similarity follows shared words. Hashed word and
character-trigram features give that, deterministically, in float32 unit vectors.

Why rotated: hashed features are sparse (a few dozen non-zero components out of 1536),
unlike a real model's dense vectors, and 006's binary-quantized index keeps one sign bit
per component: of a sparse vector the bits mostly say "zero", so Hamming distance
measured text length and search missed the best match (a 3-word query's cosine top 1 at
Hamming rank 150). A fixed orthogonal transform (random signs, then the discrete Hartley
transform) makes the vectors dense and leaves every cosine as it was; the sign bits of
its outputs then follow angles (sign random projections, SimHash), as a real model's do.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import re
import threading
from collections.abc import Sequence

import numpy as np

from worker.core.settings import EMBEDDING_DIMENSIONS, LOCAL_MODEL_NAME
from worker.embedding.base import EmbeddingResult

_WORD = re.compile(r"\w+", re.UNICODE)
_WORD_CACHE_MAX = 500_000
_word_cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
_hash_cache: dict[str, int] = {}
_cache_lock = threading.Lock()
# Per word: the whole-word feature has weight _WORD_WEIGHT, its char trigrams together
# have L2 weight 1, so "engineer" ~ "engineers" (cos ~0.65) while unrelated words are ~0.
_WORD_WEIGHT = 0.5
# Very common English words carry no topic; dropping them lowers the baseline similarity
# between unrelated texts so rankings are driven by content words.
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "he",
        "her",
        "his",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "that",
        "the",
        "their",
        "them",
        "there",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "which",
        "who",
        "will",
        "with",
        "you",
        "your",
    ]
)


def _feature_hash(feature: str) -> int:
    # Stable across processes (unlike hash()), so the test server and the worker agree.
    h = _hash_cache.get(feature)
    if h is None:
        h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
        if len(_hash_cache) < _WORD_CACHE_MAX:
            _hash_cache[feature] = h
    return h


def _word_features(word: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and signed weights for one word: the word itself plus its char trigrams."""
    key = (word, dim)
    hit = _word_cache.get(key)
    if hit is not None:
        return hit
    padded = f"<{word}>"
    trigrams = ["t:" + padded[i : i + 3] for i in range(len(padded) - 2)]
    tri_w = 1.0 / math.sqrt(len(trigrams)) if trigrams else 0.0
    hashes = [_feature_hash("w:" + word)] + [_feature_hash(t) for t in trigrams]
    idx = np.array([h % dim for h in hashes], dtype=np.int64)
    weights = np.array(
        [
            (_WORD_WEIGHT if i == 0 else tri_w) * (1.0 if (h >> 63) & 1 else -1.0)
            for i, h in enumerate(hashes)
        ]
    )
    out = (idx, weights)
    with _cache_lock:
        if len(_word_cache) >= _WORD_CACHE_MAX:
            _word_cache.clear()
        _word_cache[key] = out
    return out


def local_embed(texts: list[str], dim: int = EMBEDDING_DIMENSIONS) -> np.ndarray:
    """Deterministic hashed bag-of-words + char-trigram vectors, L2-normalised, float32.

    Texts sharing words (or word stems, via trigrams) get high cosine similarity, which is
    enough for the offline demo's semantic search to return lexically sensible results.
    Word counts are damped (1 + log tf) so one repeated word does not dominate.

    Vectorised over the whole batch: Python only tokenises and maps words to ids; feature
    expansion and accumulation are single numpy operations.
    """
    n = len(texts)
    if n == 0:
        return np.zeros((0, dim), dtype=np.float32)
    vocab: dict[str, int] = {}
    word_ids: list[int] = []
    rows: list[int] = []
    for row, text in enumerate(texts):
        words = [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]
        if not words:
            # No word characters: still a deterministic, non-zero vector.
            words = ["\x00" + (text.strip() or "<empty>")]
        word_ids.extend([vocab.setdefault(w, len(vocab)) for w in words])
        rows.extend([row] * len(words))
    nvocab = len(vocab)
    # term frequencies per (row, word)
    keys, tf = np.unique(
        np.asarray(rows, dtype=np.int64) * nvocab + np.asarray(word_ids, dtype=np.int64),
        return_counts=True,
    )
    pair_row, pair_word = np.divmod(keys, nvocab)
    pair_weight = 1.0 + np.log(tf)
    # per-word feature lists, flattened (CSR layout)
    feats = [_word_features(w, dim) for w in vocab]
    nfeat = np.fromiter((len(f[0]) for f in feats), dtype=np.int64, count=nvocab)
    offsets = np.zeros(nvocab + 1, dtype=np.int64)
    np.cumsum(nfeat, out=offsets[1:])
    flat_idx = np.concatenate([f[0] for f in feats])
    flat_w = np.concatenate([f[1] for f in feats])
    # expand every (row, word) pair into its word's features
    counts = nfeat[pair_word]
    total = int(counts.sum())
    pair_start = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=pair_start[1:])
    pos = np.arange(total, dtype=np.int64) + np.repeat(offsets[pair_word] - pair_start, counts)
    cells = np.repeat(pair_row * dim, counts) + flat_idx[pos]
    vals = flat_w[pos] * np.repeat(pair_weight, counts)
    mat = np.bincount(cells, weights=vals, minlength=n * dim).reshape(n, dim)
    norms = np.linalg.norm(mat, axis=1)
    for zero in np.flatnonzero(norms == 0).tolist():  # pathological hash cancellation
        mat[zero, _feature_hash(texts[zero]) % dim] = 1.0
        norms[zero] = 1.0
    return (_rotate(mat) / norms[:, None]).astype(np.float32)


def _rotate(mat: np.ndarray) -> np.ndarray:
    """``mat`` times a fixed orthogonal matrix (norms and cosines unchanged): random signs
    per component, then the orthonormal discrete Hartley transform (an FFT: O(d log d)
    a row, not a d x d product)."""
    dim = mat.shape[1]
    signs = _signs(dim)
    spectrum = np.fft.fft(mat * signs, axis=1)
    return (spectrum.real - spectrum.imag) / math.sqrt(dim)


@functools.cache
def _signs(dim: int) -> np.ndarray:
    # from the feature hash, not a seeded generator: fixed across numpy versions
    return np.array([1.0 if (_feature_hash(f"sign:{i}") >> 63) & 1 else -1.0 for i in range(dim)])


class LocalProvider:
    """Offline provider for demos and tests: no network, no key, deterministic."""

    rate_limited = False  # the batcher skips the API rate limiter for this provider

    def __init__(self, dimensions: int = EMBEDDING_DIMENSIONS) -> None:
        self.model = LOCAL_MODEL_NAME
        self.dimensions = dimensions

    async def warm_up(self) -> None:
        """Nothing to load: the model is a hash."""

    async def embed(
        self, texts: list[str], into: Sequence[np.ndarray] | None = None
    ) -> EmbeddingResult:
        """``into`` is ignored: hashing fills an array of its own (the batcher copies it)."""
        tokens = sum(len(_WORD.findall(t)) for t in texts)
        if len(texts) > 64:
            # Keep the event loop responsive for other jobs while hashing big batches.
            vectors = await asyncio.to_thread(local_embed, texts, self.dimensions)
        else:
            vectors = local_embed(texts, self.dimensions)
        return EmbeddingResult(vectors=vectors, prompt_tokens=tokens, rate_limits=None)

    async def aclose(self) -> None:
        return None
