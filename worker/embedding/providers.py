"""Embedding providers: the OpenAI API and an offline, deterministic local model.

Both return float32 arrays of shape (n, dimensions) so the rest of the worker never
touches Python lists of floats (3 million of them per full 2048-input request).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import re
import threading
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import structlog

from worker.embedding.ratelimit import RateLimitInfo
from worker.settings import EMBEDDING_DIMENSIONS, LOCAL_MODEL_NAME, Settings

log = structlog.get_logger(__name__)

# Models that accept the ``dimensions`` request parameter (Matryoshka-trained).
_DIMENSIONS_MODEL_PREFIXES = ("text-embedding-3-",)


def model_accepts_dimensions(model: str) -> bool:
    """ada-002 and unknown (proxy/self-hosted) models reject or ignore ``dimensions``."""
    return model.startswith(_DIMENSIONS_MODEL_PREFIXES)


@dataclass(slots=True)
class EmbeddingResult:
    """One provider call: float32 vectors (n, dims) in input order plus accounting."""

    vectors: np.ndarray
    prompt_tokens: int
    rate_limits: RateLimitInfo | None = None


class EmbeddingError(Exception):
    """Base class for provider failures. Messages never contain input texts or keys."""

    retryable: bool = False


class EmbeddingResponseError(EmbeddingError):
    """The server answered 2xx but the body is unusable (malformed, wrong count/dims, NaN).

    Retried a couple of times by the batcher (usually a proxy glitch), never partially used.
    """

    retryable = True


class EmbeddingHTTPError(EmbeddingError):
    """Non-2xx answer. Retryable for 408/409/429/5xx, permanent for other 4xx."""

    def __init__(
        self, status_code: int, message: str, *, rate_limits: RateLimitInfo | None = None
    ) -> None:
        super().__init__(f"embeddings API returned HTTP {status_code}: {message}")
        self.status_code = status_code
        self.rate_limits = rate_limits
        self.retry_after_s = rate_limits.retry_after_s if rate_limits else None
        self.retryable = status_code in (408, 409, 429) or status_code >= 500


class EmbeddingTransportError(EmbeddingError):
    """Timeout or connection failure: no (complete) answer arrived. Always retryable."""

    retryable = True

    def __init__(self, message: str, *, timeout: bool) -> None:
        super().__init__(message)
        self.timeout = timeout


@runtime_checkable
class EmbeddingProvider(Protocol):
    """What the batcher needs from a provider."""

    model: str

    async def embed(self, texts: list[str]) -> EmbeddingResult: ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------- local model

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
    return (mat / norms[:, None]).astype(np.float32)


class LocalProvider:
    """Offline provider for demos and tests: no network, no key, deterministic."""

    rate_limited = False  # the batcher skips the API rate limiter for this provider

    def __init__(self, dimensions: int = EMBEDDING_DIMENSIONS) -> None:
        self.model = LOCAL_MODEL_NAME
        self.dimensions = dimensions

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        tokens = sum(len(_WORD.findall(t)) for t in texts)
        if len(texts) > 64:
            # Keep the event loop responsive for other jobs while hashing big batches.
            vectors = await asyncio.to_thread(local_embed, texts, self.dimensions)
        else:
            vectors = local_embed(texts, self.dimensions)
        return EmbeddingResult(vectors=vectors, prompt_tokens=tokens, rate_limits=None)

    async def aclose(self) -> None:
        return None


# -------------------------------------------------------------------------- OpenAI model


def decode_embeddings(body: bytes, expected_count: int, dim: int) -> tuple[np.ndarray, int]:
    """Parse and strictly validate an embeddings response body.

    Returns (vectors float32 (n, dim), prompt_tokens). Base64 rows are decoded with
    ``np.frombuffer`` straight into the output array; float rows go through one
    ``np.asarray`` call. Any inconsistency raises :class:`EmbeddingResponseError`:
    returning a partial or misaligned result would silently corrupt the vector store.
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EmbeddingResponseError(
            f"response body is not valid JSON ({exc.__class__.__name__})"
        ) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise EmbeddingResponseError("response has no 'data' list")
    data: list[Any] = payload["data"]
    if len(data) != expected_count:
        raise EmbeddingResponseError(f"expected {expected_count} embeddings, got {len(data)}")
    out = np.empty((expected_count, dim), dtype=np.float32)
    row_bytes = dim * 4
    for i, item in enumerate(data):
        if not isinstance(item, dict) or item.get("index") != i:
            got = item.get("index") if isinstance(item, dict) else None
            raise EmbeddingResponseError(f"embedding at position {i} has index {got!r}")
        emb = item.get("embedding")
        if isinstance(emb, str):
            try:
                raw = base64.b64decode(emb, validate=True)
            except (binascii.Error, ValueError):
                raise EmbeddingResponseError(f"embedding {i}: invalid base64") from None
            if len(raw) != row_bytes:
                raise EmbeddingResponseError(
                    f"embedding {i}: {len(raw) // 4} dimensions, expected {dim}"
                )
            out[i] = np.frombuffer(raw, dtype="<f4")
        elif isinstance(emb, list):
            if len(emb) != dim:
                raise EmbeddingResponseError(
                    f"embedding {i}: {len(emb)} dimensions, expected {dim}"
                )
            try:
                out[i] = np.asarray(emb, dtype=np.float32)
            except (TypeError, ValueError):
                raise EmbeddingResponseError(f"embedding {i}: non-numeric values") from None
        else:
            raise EmbeddingResponseError(f"embedding {i}: unexpected type {type(emb).__name__}")
    if not np.isfinite(out).all():
        raise EmbeddingResponseError("response contains non-finite values")
    usage = payload.get("usage")
    tokens = usage.get("prompt_tokens", 0) if isinstance(usage, dict) else 0
    return out, int(tokens) if isinstance(tokens, int | float) else 0


class OpenAIProvider:
    """The official async SDK with SDK retries disabled (the batcher retries, rate-aware).

    We use ``with_raw_response`` and parse the body ourselves: that gives us the rate-limit
    headers, and skips the SDK's pydantic models, which would materialise every float as a
    Python object. With an explicit ``encoding_format`` the SDK (3.x) leaves base64 strings
    untouched; only when the format is omitted does it decode them itself, via ``.tolist()``.
    """

    rate_limited = True

    def __init__(self, settings: Settings) -> None:
        import openai

        if settings.openai_api_key is None:
            raise ValueError("OpenAIProvider needs OPENAI_API_KEY")
        self._openai = openai
        self.model = settings.embedding_model
        self.dimensions = settings.embedding_dimensions
        self.encoding_format = settings.embedding_encoding_format
        self.send_dimensions = model_accepts_dimensions(self.model)
        self._client = openai.AsyncOpenAI(
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            timeout=settings.embed_request_timeout_s,
            max_retries=0,
        )

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        openai = self._openai
        kwargs: dict[str, Any] = {
            "model": self.model,
            "input": texts,
            "encoding_format": self.encoding_format,
        }
        if self.send_dimensions:
            kwargs["dimensions"] = self.dimensions
        try:
            raw = await self._client.embeddings.with_raw_response.create(**kwargs)
        except openai.APIStatusError as exc:
            info = RateLimitInfo.from_headers(exc.response.headers)
            raise EmbeddingHTTPError(
                exc.status_code, _error_message(exc), rate_limits=info
            ) from None
        except openai.APITimeoutError:
            raise EmbeddingTransportError("embeddings request timed out", timeout=True) from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__.__class__.__name__ if exc.__cause__ else "unknown"
            raise EmbeddingTransportError(f"connection error ({cause})", timeout=False) from None
        info = RateLimitInfo.from_headers(raw.headers)
        body = raw.content
        if len(texts) > 256:
            vectors, tokens = await asyncio.to_thread(
                decode_embeddings, body, len(texts), self.dimensions
            )
        else:
            vectors, tokens = decode_embeddings(body, len(texts), self.dimensions)
        return EmbeddingResult(vectors=vectors, prompt_tokens=tokens, rate_limits=info)

    async def aclose(self) -> None:
        await self._client.close()


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:300]
    return str(getattr(exc, "message", "") or exc.__class__.__name__)[:300]


_local_logged = False


def make_provider(settings: Settings) -> EmbeddingProvider:
    """Pick the provider from ``settings.provider``; logs once when falling back to local."""
    global _local_logged
    if settings.provider == "openai":
        return OpenAIProvider(settings)
    if not _local_logged:
        _local_logged = True
        reason = (
            "OPENAI_API_KEY not set"
            if settings.embedding_provider == "auto"
            else "EMBEDDING_PROVIDER=local"
        )
        log.info("embedding.provider_local", reason=reason, model=LOCAL_MODEL_NAME)
    return LocalProvider(settings.embedding_dimensions)
