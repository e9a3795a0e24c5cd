"""What every embedding provider returns and raises, and the protocol the batcher needs.

Its own module so the providers (``providers.py`` for the OpenAI API, ``local.py`` for the
offline model) and the batcher share these types without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from worker.embedding.ratelimit import RateLimitInfo


@dataclass(slots=True)
class EmbeddingResult:
    """One provider call: float32 vectors (n, dims) in input order plus accounting.
    ``vectors`` is None when the provider wrote them into the rows it was given."""

    vectors: np.ndarray | None
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

    async def embed(
        self, texts: list[str], into: Sequence[np.ndarray] | None = None
    ) -> EmbeddingResult:
        """Vectors for ``texts``. ``into`` (one float32 row per input) is where they may be
        written (the batcher's callers' rows); a provider that returns an array of its own
        instead (the local model) may ignore it."""

    async def warm_up(self) -> None:
        """Pay one-time costs at startup rather than inside the first request."""

    async def aclose(self) -> None: ...
