"""The offline provider: deterministic, normalised, lexically meaningful, fast."""

from __future__ import annotations

import time

import numpy as np
import pytest
import structlog

from worker.core.settings import EMBEDDING_DIMENSIONS, LOCAL_MODEL_NAME, Settings
from worker.embedding import LocalProvider, local_embed, make_provider
from worker.embedding import providers as providers_mod


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_shape_dtype_norm_and_determinism() -> None:
    texts = ["Quarterly revenue grew 12%", "", "!!!", "naïve café — Zürich", "a " * 5000]
    v = local_embed(texts)
    assert v.shape == (5, EMBEDDING_DIMENSIONS)
    assert v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(v).all()
    assert np.array_equal(v, local_embed(texts))
    # Row results do not depend on what else is in the batch.
    assert np.array_equal(v[3], local_embed([texts[3]])[0])
    assert local_embed([]).shape == (0, EMBEDDING_DIMENSIONS)


def test_case_and_punctuation_insensitive() -> None:
    a, b = local_embed(["Board meeting, Tuesday!", "board MEETING tuesday"])
    assert cos(a, b) == pytest.approx(1.0, abs=1e-6)


def test_lexical_overlap_ranks_sensibly() -> None:
    docs = [
        "The board approved the quarterly budget for marketing",
        "Our hiring plan adds three engineers to the platform team",
        "Lunch menu: soup, salad and sandwiches on Friday",
        "Customer churn increased after the pricing change",
    ]
    dv = local_embed(docs)
    queries = {
        "marketing budget approval": 0,
        "engineers hiring": 1,
        "what is for lunch on friday": 2,
        "why did churn go up after pricing changes": 3,
    }
    for query, expected in queries.items():
        q = local_embed([query])[0]
        scores = dv @ q
        assert int(np.argmax(scores)) == expected, (query, scores)
    # Stems match via character trigrams: "engineer" ~ "engineers" > unrelated.
    e1, e2, other = local_embed(["engineer", "engineers", "sandwich"])
    assert cos(e1, e2) > 0.5 > cos(e1, other)


def test_unrelated_texts_are_near_orthogonal() -> None:
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, int(rng.integers(3, 10)))) for _ in range(5000)]
    texts = [" ".join(rng.choice(words, 50)) for _ in range(50)]
    v = local_embed(texts)
    sims = v @ v.T
    off = sims[~np.eye(50, dtype=bool)]
    assert np.abs(off).mean() < 0.15


def test_throughput_is_adequate() -> None:
    rng = np.random.default_rng(1)
    words = [f"word{i}" for i in range(5_000)]
    texts = [" ".join(rng.choice(words, 380)) for _ in range(256)]  # ~512 tokens each
    local_embed(texts)  # warm the per-word feature cache (steady state of a worker)
    started = time.perf_counter()
    local_embed(texts)
    elapsed = time.perf_counter() - started
    assert 256 / elapsed > 300, f"{256 / elapsed:.0f} texts/s"


async def test_provider_protocol_and_result() -> None:
    p = LocalProvider()
    assert p.model == LOCAL_MODEL_NAME
    texts = [f"text number {i}" for i in range(100)]  # > 64: runs in a thread
    result = await p.embed(texts)
    assert result.vectors.shape == (100, EMBEDDING_DIMENSIONS)
    assert np.array_equal(result.vectors, local_embed(texts))
    assert result.prompt_tokens == 300
    assert result.rate_limits is None
    await p.aclose()


def test_make_provider_falls_back_to_local_and_logs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers_mod, "_local_logged", False)
    with structlog.testing.capture_logs() as logs:
        p1 = make_provider(Settings(openai_api_key=None, embedding_provider="auto"))
        p2 = make_provider(Settings(openai_api_key=None, embedding_provider="auto"))
    assert isinstance(p1, LocalProvider) and isinstance(p2, LocalProvider)
    events = [e for e in logs if e["event"] == "embedding.provider_local"]
    assert len(events) == 1
    assert "OPENAI_API_KEY" in events[0]["reason"]


def test_make_provider_openai_when_key_set() -> None:
    p = make_provider(Settings(openai_api_key="sk-test", openai_base_url="http://127.0.0.1:9/v1"))
    assert p.model == "text-embedding-3-small"
    assert not isinstance(p, LocalProvider)
    assert isinstance(
        make_provider(Settings(openai_api_key="sk-test", embedding_provider="local")), LocalProvider
    )


def test_vectors_are_dense_so_sign_bits_follow_angles() -> None:
    """006's index keeps one sign bit per component: for a 3-word query among 400 texts,
    the cosine-nearest text must be among the 20 nearest by Hamming distance of those bits
    (sparse hashed vectors put it at rank ~150: the bits only said "zero")."""
    words = [f"w{i:03d}x{i * 7919 % 1000:03d}" for i in range(1200)]
    texts = [" ".join(words[3 * i : 3 * i + 12]) for i in range(400)]
    stored = local_embed(texts)
    assert np.count_nonzero(stored, axis=1).min() > 0.95 * EMBEDDING_DIMENSIONS
    bits = stored > 0
    for i in range(0, 400, 40):
        q = local_embed([" ".join(words[3 * i + 1 : 3 * i + 4])])[0]
        nearest = int(np.argmax(stored @ q))
        hamming = np.count_nonzero(bits != (q > 0), axis=1)
        assert int(np.count_nonzero(hamming < hamming[nearest])) < 20
