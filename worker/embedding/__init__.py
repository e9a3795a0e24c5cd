"""Embedding layer: providers (OpenAI, offline local), rate limiting and cross-job batching.

Typical use in the worker::

    provider = make_provider(settings)
    batcher = EmbeddingBatcher(provider, settings)
    await batcher.start()
    vectors = await batcher.embed(chunk_texts, chunk_token_counts)  # float32 (n, 1536)
    ...
    await batcher.aclose()
"""

from worker.embedding.base import (
    EmbeddingError,
    EmbeddingHTTPError,
    EmbeddingProvider,
    EmbeddingResponseError,
    EmbeddingResult,
    EmbeddingTransportError,
)
from worker.embedding.batcher import BatcherStats, EmbeddingBatcher
from worker.embedding.local import LocalProvider, local_embed
from worker.embedding.providers import (
    OpenAIProvider,
    decode_embeddings,
    make_provider,
    model_accepts_dimensions,
)
from worker.embedding.ratelimit import RateLimiter, RateLimitInfo, parse_duration

__all__ = [
    "BatcherStats",
    "EmbeddingBatcher",
    "EmbeddingError",
    "EmbeddingHTTPError",
    "EmbeddingProvider",
    "EmbeddingResponseError",
    "EmbeddingResult",
    "EmbeddingTransportError",
    "LocalProvider",
    "OpenAIProvider",
    "RateLimitInfo",
    "RateLimiter",
    "decode_embeddings",
    "local_embed",
    "make_provider",
    "model_accepts_dimensions",
    "parse_duration",
]
