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
import math
import os
import re
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
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


# A key "embedding" and the opening quote of a string value. Inside a JSON string a quote
# is always escaped, so this only ever matches a key; the value runs to the next quote.
_KEY_VALUE = re.compile(rb'"embedding"\s*:\s*"')
_KEY = b'"embedding"'
_BLANK = b'"embedding":""'


class EmbeddingsDecoder:
    """Decodes an embeddings response as its body arrives, without ever holding it whole.

    Each ``"embedding": "<base64>"`` is decoded from the received bytes straight into the
    output array and blanked; what is kept of the body is the rest (a few dozen bytes an
    item), parsed and checked at ``finish``. A full request's answer (2,048 rows of 1,536
    floats) is ~17 MB of base64: read whole (the SDK's ``content``, itself joined from the
    received pieces) and parsed (its strings as large again) it was 3-4 copies of that,
    per request in flight, at the worker's peak of memory. Float rows (and base64 written
    with escapes) stay in the parsed rest and go through ``np.asarray`` one by one.
    Any inconsistency raises :class:`EmbeddingResponseError`: returning a partial or
    misaligned result would silently corrupt the vector store.

    ``into``: a float32 row per input (the batcher's callers' rows) to decode row i into,
    not an array of its own (then copied to the callers: one more copy of every answer in
    flight, 12.6 MB a full request). Written as the answer arrives, before it is checked:
    after an error their contents are undefined (the batcher retries or fails them).
    """

    def __init__(
        self, expected_count: int, dim: int, into: Sequence[np.ndarray] | None = None
    ) -> None:
        self.expected_count = expected_count
        self.dim = dim
        self.row_bytes = dim * 4
        # a base64 row is this long; a key with more than this after it is no such row
        self._pending_max = len(_KEY) + 64 + (self.row_bytes + 2) // 3 * 4
        if into is not None and len(into) != expected_count:
            raise ValueError(f"{len(into)} destination rows for {expected_count} inputs")
        self.out: np.ndarray | None = None
        self.into: np.ndarray | Sequence[np.ndarray] = into if into is not None else []
        if into is None:
            self.out = self.into = np.empty((expected_count, dim), dtype=np.float32)
        # Sum of every value in float64 (no finite float32 values overflow it): not finite
        # iff some value is not. One reduction a row, in the decoding thread.
        self.total = 0.0
        self.rows = 0  # base64 rows decoded, in body order
        self.errors: dict[int, str] = {}  # row -> what was wrong with it
        self._rest: list[bytes] = []
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        buf = self._tail + chunk if self._tail else chunk
        pos = at = 0  # kept up to ``pos``; searched up to ``at``
        while (m := _KEY_VALUE.search(buf, at)) is not None:
            start = m.end()
            end = buf.find(b'"', start)
            if end < 0:
                break  # the value goes on in the next chunk
            at = end + 1
            if buf.find(b"\\", start, end) >= 0:
                continue  # escapes: left to the JSON parser
            self._rest += (buf[pos : m.start()], _BLANK)
            self._row(buf, start, end)
            pos = at
        # Keep what may be a key whose value is still on its way (or the key's start).
        cut = buf.rfind(_KEY, pos)
        if cut < 0 or len(buf) - cut > self._pending_max:
            cut = max(pos, len(buf) - len(_KEY) + 1)
        self._rest.append(buf[pos:cut])
        self._tail = buf[cut:]

    def feed_all(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.feed(chunk)

    def _row(self, buf: bytes, start: int, end: int) -> None:
        k, self.rows = self.rows, self.rows + 1
        if k >= self.expected_count:
            return  # (the count check at ``finish`` refuses the answer)
        try:
            raw = binascii.a2b_base64(memoryview(buf)[start:end], strict_mode=True)
        except (binascii.Error, ValueError):
            self.errors[k] = "invalid base64"
            return
        if len(raw) != self.row_bytes:
            self.errors[k] = f"{len(raw) // 4} dimensions, expected {self.dim}"
            return
        row = np.frombuffer(raw, dtype="<f4")
        self.total += float(np.add.reduce(row, dtype=np.float64))
        self.into[k][...] = row

    def finish(self) -> tuple[np.ndarray | None, int]:
        """(vectors float32 (n, dim) or None if ``into``, prompt_tokens) once all is fed."""
        self._rest.append(self._tail)
        self._tail = b""
        try:
            payload = json.loads(b"".join(self._rest))
        except (ValueError, UnicodeDecodeError) as exc:
            raise EmbeddingResponseError(
                f"response body is not valid JSON ({exc.__class__.__name__})"
            ) from None
        finally:
            self._rest = []
        return self._check(payload)

    def _check(self, payload: Any) -> tuple[np.ndarray | None, int]:
        n, dim, into = self.expected_count, self.dim, self.into
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            raise EmbeddingResponseError("response has no 'data' list")
        data: list[Any] = payload["data"]
        if len(data) != n:
            raise EmbeddingResponseError(f"expected {n} embeddings, got {len(data)}")
        blanks = sum(1 for item in data if isinstance(item, dict) and item.get("embedding") == "")
        if blanks != self.rows:
            raise _Misplaced
        source: list[int | np.ndarray] = []  # per item: its decoded row, or its float row
        k = 0  # blanked rows are in the body's order: the data items' order
        for i, item in enumerate(data):
            if not isinstance(item, dict) or item.get("index") != i:
                got = item.get("index") if isinstance(item, dict) else None
                raise EmbeddingResponseError(f"embedding at position {i} has index {got!r}")
            emb = item.get("embedding")
            if emb == "":
                if k in self.errors:
                    raise EmbeddingResponseError(f"embedding {i}: {self.errors[k]}")
                source.append(k)
                k += 1
            else:
                source.append(_row_of(i, emb, dim))
        # Rows decoded ahead of a float row sit above their item: move them down, from
        # the last item (a row is never needed by an item before it).
        total = self.total
        for i in range(n - 1, -1, -1):
            src = source[i]
            if isinstance(src, np.ndarray):
                total += float(np.add.reduce(src, dtype=np.float64))
                into[i][...] = src
            elif src != i:
                into[i][...] = into[src]
        if not math.isfinite(total):
            raise EmbeddingResponseError("response contains non-finite values")
        usage = payload.get("usage")
        tokens = usage.get("prompt_tokens", 0) if isinstance(usage, dict) else 0
        return self.out, int(tokens) if isinstance(tokens, int | float) else 0


class _Misplaced(Exception):
    """An "embedding" string outside the data items (never seen from OpenAI)."""


def _row_of(i: int, emb: Any, dim: int) -> np.ndarray:
    """A row that stayed in the parsed JSON: base64 with escapes, or a list of floats."""
    if isinstance(emb, str):
        try:
            raw = base64.b64decode(emb, validate=True)
        except (binascii.Error, ValueError):
            raise EmbeddingResponseError(f"embedding {i}: invalid base64") from None
        if len(raw) != dim * 4:
            raise EmbeddingResponseError(
                f"embedding {i}: {len(raw) // 4} dimensions, expected {dim}"
            )
        return np.frombuffer(raw, dtype="<f4")
    if isinstance(emb, list):
        if len(emb) != dim:
            raise EmbeddingResponseError(f"embedding {i}: {len(emb)} dimensions, expected {dim}")
        try:
            return np.asarray(emb, dtype=np.float32)
        except (TypeError, ValueError):
            raise EmbeddingResponseError(f"embedding {i}: non-numeric values") from None
    raise EmbeddingResponseError(f"embedding {i}: unexpected type {type(emb).__name__}")


def decode_embeddings(
    body: bytes, expected_count: int, dim: int, into: Sequence[np.ndarray] | None = None
) -> tuple[np.ndarray | None, int]:
    """Parse and strictly validate a whole embeddings response body (see
    :class:`EmbeddingsDecoder`). Returns (vectors float32 (n, dim) or None, prompt_tokens)."""
    decoder = EmbeddingsDecoder(expected_count, dim, into)
    decoder.feed(body)
    try:
        return decoder.finish()
    except _Misplaced:
        plain = EmbeddingsDecoder(expected_count, dim, into)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):  # (finish parsed it blanked already)
            raise EmbeddingResponseError("response body is not valid JSON") from None
        return plain._check(payload)


#: Error bodies are read up to this many bytes (their message is all we keep).
ERROR_BODY_MAX_BYTES = 64 * 1024


class OpenAIProvider:
    """The embeddings endpoint over the worker's own ``httpx`` client, no SDK.

    One POST, read as it streams in (:class:`EmbeddingsDecoder`), with the rate-limit
    headers; retries are the batcher's (rate-aware). The official SDK did the same request
    for ~20 MB of resident memory in every worker (its import: 680 modules, its own HTTP
    stack ``httpx2``/``httpcore2`` beside the ``httpx`` the fetcher uses, pydantic models)
    and read each answer whole before we could parse it.
    """

    rate_limited = True

    def __init__(self, settings: Settings) -> None:
        if settings.openai_api_key is None:
            raise ValueError("OpenAIProvider needs OPENAI_API_KEY")
        self.model = settings.embedding_model
        self.dimensions = settings.embedding_dimensions
        self.encoding_format = settings.embedding_encoding_format
        self.send_dimensions = model_accepts_dimensions(self.model)
        headers = {"Authorization": f"Bearer {settings.openai_api_key.get_secret_value()}"}
        # (read from the environment as the SDK does)
        for env, header in (
            ("OPENAI_ORG_ID", "OpenAI-Organization"),
            ("OPENAI_PROJECT_ID", "OpenAI-Project"),
        ):
            if os.environ.get(env):
                headers[header] = os.environ[env]
        self._url = (settings.openai_base_url or DEFAULT_BASE_URL).rstrip("/") + "/embeddings"
        self._client = httpx.AsyncClient(headers=headers, timeout=settings.embed_request_timeout_s)

    async def warm_up(self) -> None:
        """Import what the HTTP client imports lazily on its first request (anyio's asyncio
        backend), not on the event loop in front of the first request every worker makes,
        which at the start of a bulk load is the one every job waits for. No request is
        made (it would count against the rate limits)."""
        with contextlib.suppress(ImportError):  # (httpcore's dependency, not ours)
            import anyio

            anyio.Event()  # loads its backend for the running event loop

    async def embed(
        self, texts: list[str], into: Sequence[np.ndarray] | None = None
    ) -> EmbeddingResult:
        """Vectors for ``texts``; with ``into`` (a row per input) decoded into those rows,
        and the result's ``vectors`` is None."""
        request: dict[str, Any] = {
            "model": self.model,
            "input": texts,
            "encoding_format": self.encoding_format,
        }
        if self.send_dimensions:
            request["dimensions"] = self.dimensions
        content = json.dumps(request).encode()
        decoder = EmbeddingsDecoder(len(texts), self.dimensions, into)
        try:
            async with self._client.stream(
                "POST", self._url, content=content, headers=_JSON
            ) as response:
                info = RateLimitInfo.from_headers(response.headers)
                if not response.is_success:
                    message = _error_message(await _read_capped(response))
                    raise EmbeddingHTTPError(response.status_code, message, rate_limits=info)
                await _feed(decoder, response, inline=len(texts) <= INLINE_DECODE_MAX_INPUTS)
        except httpx.TimeoutException:
            raise EmbeddingTransportError("embeddings request timed out", timeout=True) from None
        except httpx.TransportError as exc:
            cause = exc.__class__.__name__
            raise EmbeddingTransportError(f"connection error ({cause})", timeout=False) from None
        try:
            vectors, tokens = decoder.finish()
        except _Misplaced:
            raise EmbeddingResponseError("response has embeddings outside its data") from None
        return EmbeddingResult(vectors=vectors, prompt_tokens=tokens, rate_limits=info)

    async def aclose(self) -> None:
        await self._client.aclose()


#: Answers for more inputs than this are decoded off the event loop, a piece at a time
#: (base64 decoding runs at ~160 MB/s here: ~0.1 s for a full 2,048-row answer).
INLINE_DECODE_MAX_INPUTS = 256
#: ... in pieces of this many received bytes (at most two held at a time per request).
DECODE_PIECE_BYTES = 256 * 1024
_decode_pool: ThreadPoolExecutor | None = None


async def _feed(decoder: EmbeddingsDecoder, response: httpx.Response, *, inline: bool) -> None:
    """Feed the answer to ``decoder`` as it arrives. Off the loop, a piece decodes while the
    next one is received; the loop waits only when decoding falls behind (or at the end):
    a thread hop awaited per piece cost a turn of a busy loop each (~66 a full answer),
    which at a backfill's loop lag made bulk ingest slower."""
    global _decode_pool
    pending: list[bytes] = []
    size = 0
    decoding: Future[None] | None = None
    async for chunk in response.aiter_bytes():
        if inline:
            decoder.feed(chunk)
            continue
        pending.append(chunk)
        size += len(chunk)
        if size >= DECODE_PIECE_BYTES:
            if decoding is not None and not decoding.done():
                await asyncio.wrap_future(decoding)
            if decoding is not None:
                decoding.result()  # (raises what the decoder raised)
            if _decode_pool is None:
                _decode_pool = ThreadPoolExecutor(4, thread_name_prefix="embeddings-decode")
            decoding = _decode_pool.submit(decoder.feed_all, pending)
            pending, size = [], 0
    if decoding is not None:
        await asyncio.wrap_future(decoding)
    if pending:
        decoder.feed_all(pending)  # (the last piece: less than DECODE_PIECE_BYTES)


DEFAULT_BASE_URL = "https://api.openai.com/v1"
_JSON = {"Content-Type": "application/json", "Accept": "application/json"}


async def _read_capped(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= ERROR_BODY_MAX_BYTES:
            break
    return bytes(body[:ERROR_BODY_MAX_BYTES])


def _error_message(body: bytes) -> str:
    """The API's ``{"error": {"message": ...}}``, else the start of the body."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body[:300].decode("utf-8", "replace") or "no message"
    err = doc.get("error", doc) if isinstance(doc, dict) else doc
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return str(err["message"])[:300]
    return body[:300].decode("utf-8", "replace")


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
