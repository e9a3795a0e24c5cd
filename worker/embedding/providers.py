"""Embedding providers: the OpenAI API client, and the choice between it and the offline
local model (``local.py``); shared result and error types live in ``base.py``.

Both return float32 arrays of shape (n, dimensions) so the rest of the worker never
touches Python lists of floats (3 million of them per full 2048-input request).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from typing import Any

import numpy as np
import structlog

from worker.core.settings import LOCAL_MODEL_NAME, Settings
from worker.embedding.base import (
    EmbeddingHTTPError,
    EmbeddingProvider,
    EmbeddingResponseError,
    EmbeddingResult,
    EmbeddingTransportError,
)
from worker.embedding.local import LocalProvider
from worker.embedding.ratelimit import RateLimitInfo

log = structlog.get_logger(__name__)

# Models that accept the ``dimensions`` request parameter (Matryoshka-trained).
_DIMENSIONS_MODEL_PREFIXES = ("text-embedding-3-",)


def model_accepts_dimensions(model: str) -> bool:
    """ada-002 and unknown (proxy/self-hosted) models reject or ignore ``dimensions``."""
    return model.startswith(_DIMENSIONS_MODEL_PREFIXES)


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

    async def warm_up(self) -> None:
        """Import what the SDK imports lazily on its first request (its embeddings resource,
        anyio's asyncio backend): ~35 ms here, on the event loop, in front of the first
        request every worker makes, which at the start of a bulk load is the one every job
        waits for. No request is made (it would count against the rate limits)."""
        _ = self._client.embeddings.with_raw_response
        with contextlib.suppress(ImportError):  # (the SDK's dependency, not ours)
            import anyio

            anyio.Event()  # loads its backend for the running event loop

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        openai = self._openai
        kwargs: dict[str, Any] = {
            "model": self.model,
            # The texts go in ``extra_body``, which the SDK sends as given and which takes
            # precedence over its own fields: as ``input`` itself they would first be walked
            # one by one by the SDK's request transform (13 ms per 831 texts here, on the
            # event loop, in front of the request). The wire format is the same.
            "input": [],
            "extra_body": {"input": texts},
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
