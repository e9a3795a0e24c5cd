"""Process-wide embedding batcher shared by all concurrent ingestion jobs.

Why: OpenAI charges per token but limits per request and per minute, and each request
has fixed latency. Packing the chunks of many small jobs into few large requests (up to
2048 inputs / ``embed_batch_max_tokens``) keeps request count and latency down, while a
single rate limiter keeps the whole process under the account budget.

Flow: ``embed()`` enqueues (caller, row) items and awaits a future. A dispatcher task
waits for a free request slot (``embed_max_concurrent_requests``, plus one kept for live
rows), lingers for more items unless a request is already full (``linger.py``: only while
more rows are on the way, announced jobs or a queue backlog, and never longer than the
linger caps), then packs items round-robin across callers (``packing.py``: a 50k-chunk job
cannot starve a 5-chunk one), deduplicating identical texts; live items' rows go first, in
requests of their own, without lingering. Each request passes the rate budget
(``budget.py``: shared by the fleet in Redis, or a local limiter) and is retried with
tenacity; its answer is decoded straight into its callers' rows (``_destinations``).
A request that finally fails fails only the callers that had rows in it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import structlog
from tenacity import RetryCallState

from worker.core.settings import MAX_INPUT_TOKENS, Settings
from worker.embedding.base import (
    EmbeddingHTTPError,
    EmbeddingProvider,
)
from worker.embedding.budget import Budget, Limits, LocalBudget
from worker.embedding.linger import BacklogProbe, Linger
from worker.embedding.packing import Batch, Caller, PendingRows
from worker.embedding.ratelimit import RateLimiter
from worker.embedding.retry import request_retrying

__all__ = ["BatcherStats", "EmbeddingBatcher"]

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class BatcherStats:
    """Counters for logs and benchmarks (cumulative since construction)."""

    requests: int = 0
    inputs: int = 0
    deduplicated: int = 0
    tokens: int = 0
    retries: int = 0
    rate_limited_responses: int = 0
    failures: int = 0
    request_seconds: float = 0.0
    rate_limit_wait_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class EmbeddingBatcher:
    """Packs ``embed`` calls from concurrent jobs into rate-limited API requests."""

    def __init__(
        self,
        provider: EmbeddingProvider,
        settings: Settings,
        *,
        limiter: RateLimiter | None = None,
        budget: Budget | None = None,
        retry_initial_wait_s: float = 0.5,
        close_provider: bool = True,
    ) -> None:
        self.provider = provider
        self.settings = settings
        self.dimensions = settings.embedding_dimensions
        self._rate_limited = bool(getattr(provider, "rate_limited", True))
        self.budget: Budget = budget or LocalBudget(
            limiter or Limits.from_settings(settings).local(share=1)
        )
        self.max_inputs = settings.embed_batch_max_inputs
        self.max_tokens = settings.embed_batch_max_tokens
        if self._rate_limited:
            # A request larger than the limiter's burst could overshoot a strict
            # sliding-minute limit. (A single input above this cap still goes alone.)
            self.max_tokens = min(self.max_tokens, self.budget.max_request_tokens)
        self.stats = BatcherStats()
        self._retry_initial = retry_initial_wait_s
        self._slots = asyncio.Semaphore(settings.embed_max_concurrent_requests)
        # Live rows get a request slot even when bulk requests hold all the others.
        self._live_slot = asyncio.Semaphore(1)
        #: Told of every request's outcome ("ok" / "rate_limited", tokens, inputs): metrics.
        self.observers: list[Callable[[str, int, int], None]] = []
        self._pending = PendingRows(self.max_inputs, self.max_tokens)
        self._wakeup = asyncio.Event()
        self._linger = Linger(
            settings.embed_batch_linger_ms / 1000.0,
            settings.embed_batch_max_linger_ms / 1000.0,
            self._wakeup,
        )
        self._dispatcher: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._closed = False
        self._close_provider = close_provider

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the dispatcher task (``embed`` also starts it lazily)."""
        if self._closed:
            raise RuntimeError("EmbeddingBatcher is closed")
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="embedding-batcher")

    async def aclose(self) -> None:
        """Stop accepting work, finish in-flight requests, fail queued callers, close provider."""
        self._closed = True
        self._wakeup.set()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        for caller in self._pending.take_all():
            if not caller.dead:
                caller.future.set_exception(RuntimeError("EmbeddingBatcher closed"))
        if self._close_provider:
            await self.provider.aclose()

    async def __aenter__(self) -> EmbeddingBatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ public API

    async def embed(
        self,
        texts: list[str],
        token_counts: list[int],
        arrived: Callable[[], None] | None = None,
        *,
        on_queued: Callable[[int], None] | None = None,
        live: bool = False,
    ) -> np.ndarray:
        """Vectors (len(texts), dims) float32, row i for texts[i].

        The moment the rows are queued here, ``arrived`` (an ``expect()`` handle) is called
        and ``on_queued(rows)`` is told how many: the caller's job may then give its queue
        slot back while it waits (``worker.queue.handoff``).

        ``live``: a fresh item's rows (``worker.core.priority``): packed ahead of bulk rows
        in requests of their own, sent without lingering, served first by the budget.

        ``token_counts`` are the callers' cl100k counts; they drive packing and rate
        limiting. Raises ValueError for over-long/empty inputs, and the provider's
        ``EmbeddingError`` if a request carrying any of these rows finally fails.
        Prefer calls of a few thousand rows: the whole result is held in memory.
        """
        if len(texts) != len(token_counts):
            raise ValueError("texts and token_counts must have the same length")
        for i, (text, n) in enumerate(zip(texts, token_counts, strict=True)):
            if n > MAX_INPUT_TOKENS:
                raise ValueError(f"input {i} has {n} tokens; the limit is {MAX_INPUT_TOKENS}")
            if n < 0 or not text:
                raise ValueError(f"input {i} is empty or has a negative token count")
        if not texts:
            return np.empty((0, self.dimensions), dtype=np.float32)
        if self._closed:
            raise RuntimeError("EmbeddingBatcher is closed")
        await self.start()
        loop = asyncio.get_running_loop()
        caller = Caller(
            texts=list(texts),
            tokens=[int(n) for n in token_counts],
            future=loop.create_future(),
            remaining=len(texts),
            live=live,
        )
        self._pending.add(caller, time.monotonic())
        if arrived is not None:
            arrived()
        if on_queued is not None:
            on_queued(len(texts))
        self._wakeup.set()
        return await caller.future

    @property
    def unsent_callers(self) -> int:
        """``embed`` calls with rows not yet in a request: their jobs cannot go on until a
        request carries them (callers whose rows are all in flight go on by themselves)."""
        return len(self._pending)

    @property
    def unsent_rows(self) -> int:
        """Rows queued here and not yet in a request."""
        return self._pending.rows

    def set_backlog(self, probe: BacklogProbe | None, *, recheck_s: float = 0.02) -> None:
        """Install a probe of work not yet started, e.g. jobs still waiting in a queue.

        ``probe()`` returns how many such jobs could still start in this process and
        bring rows here soon (0 = none). While it reports any, a partial request keeps
        lingering (asking again every ``recheck_s``), up to ``embed_batch_max_linger_ms``
        instead of ``embed_batch_linger_ms``: a backlog means bulk load, where full
        requests matter more than the latency of a row. With no backlog and no announced
        caller on its way a partial request still goes out at once. The probe must be
        cheap. A call that fails or takes longer than ``BACKLOG_PROBE_TIMEOUT_S`` leaves the
        last answer standing (0 before any answer); the linger caps bound the wait.
        """
        self._linger.set_backlog(probe, recheck_s=recheck_s)

    def expect(self) -> Callable[[], None]:
        """Announce a caller that will probably call ``embed`` soon; while any is pending the
        dispatcher lingers (up to the linger time), otherwise a partial request goes out at
        once. Returns a handle: pass it to ``embed(arrived=...)``, which calls it
        the moment the rows are queued; call it yourself if you end up not embedding."""
        return self._linger.expect()

    def note_bulk(self) -> None:
        """Bulk load has begun without the queue showing it: a page job started, whose
        items announce themselves (``expect``) one by one as they start, while the queue
        behind it may already be empty. Requests then linger as under a backlog (up to
        ``embed_batch_max_linger_ms``, for as long as rows are on the way) instead of
        going out ``embed_batch_linger_ms`` after their first row, part full."""
        self._linger.note_bulk()

    # ------------------------------------------------------------------ dispatching

    async def _dispatch(self) -> None:
        while not self._closed:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            slot = await self._slot()
            try:
                await self._linger.wait(self._pending, lambda: self._closed)
                batch = self._pending.pack(time.monotonic())
                self.stats.deduplicated += batch.deduplicated
            except BaseException:
                slot.release()
                raise
            if batch.rows == 0:
                slot.release()
                continue
            task = asyncio.create_task(self._run(batch, slot))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            # Not kept while waiting for the next slot or rows: through its routes the
            # batch holds its callers' arrays (a full request's: 12.6 MB) once answered.
            del batch, task

    async def _slot(self) -> asyncio.Semaphore:
        """A request slot: a free one of ``embed_max_concurrent_requests``, or, while live
        rows wait and bulk requests hold all of those, the live lane's own."""
        while True:
            if not self._slots.locked():
                await self._slots.acquire()
                return self._slots
            if self._pending.live_rows and not self._live_slot.locked():
                await self._live_slot.acquire()
                return self._live_slot
            self._wakeup.clear()
            await self._wakeup.wait()

    # ------------------------------------------------------------------ requests

    async def _run(self, batch: Batch, slot: asyncio.Semaphore) -> None:
        try:
            await self._request(batch)
        except Exception as exc:
            self.stats.failures += 1
            log.warning(
                "embedding.request_failed",
                batch_size=len(batch.texts),
                tokens=batch.tokens,
                callers=len(batch.routes),
                error=str(exc),
                error_type=exc.__class__.__name__,
            )
            for caller in batch.routes:
                if not caller.dead:
                    caller.future.set_exception(exc)
                    self._pending.drop(caller)
            return
        finally:
            slot.release()
            self._wakeup.set()  # the dispatcher may be waiting for a slot
        for caller, (dst, _) in batch.routes.items():
            if caller.dead:
                continue
            caller.remaining -= len(dst)
            if caller.remaining == 0:
                assert caller.result is not None
                caller.future.set_result(caller.result)

    async def _request(self, batch: Batch) -> None:
        """The batch's vectors into its callers' rows, or the request's final error."""
        retrying = request_retrying(self.settings, self._retry_initial, self._before_retry)
        async for attempt in retrying:
            with attempt:
                await self._attempt(batch, attempt.retry_state.attempt_number)

    def _destinations(
        self, batch: Batch
    ) -> tuple[list[np.ndarray], list[tuple[np.ndarray, int, int]]]:
        """A row per input for the provider to write into: the first live caller's row
        that asked for it (inputs only dead callers asked for: scratch rows), and the
        other rows that asked for the same text (deduplicated), as (array, row, input),
        copied from it once answered.

        Why: decoded into an array of its own and then scattered, every answer in flight
        was held twice (up to 12.6 MB a full request). Made after the budget's grant, so
        callers waiting for tokens still hold no array (``Caller.result``)."""
        into: list[np.ndarray | None] = [None] * len(batch.texts)
        copies: list[tuple[np.ndarray, int, int]] = []
        for caller, (dst, src) in batch.routes.items():
            if caller.dead:
                continue
            if caller.result is None:
                shape = (len(caller.texts), self.dimensions)
                caller.result = np.empty(shape, dtype=np.float32)
            result = caller.result
            for row, pos in zip(dst, src, strict=True):
                if into[pos] is None:
                    into[pos] = result[row]
                else:
                    copies.append((result, row, pos))
        missing = [pos for pos, row in enumerate(into) if row is None]
        if missing:
            scratch = np.empty((len(missing), self.dimensions), dtype=np.float32)
            for pos, spare in zip(missing, scratch, strict=True):
                into[pos] = spare
        return into, copies  # type: ignore[return-value]  # (no None left)

    async def _attempt(self, batch: Batch, attempt: int) -> None:
        texts, tokens = batch.texts, batch.tokens
        grant = None
        if self._rate_limited:
            grant = await self.budget.take(tokens, live=batch.live)
            self.stats.rate_limit_wait_s += grant.waited_s
        into, copies = self._destinations(batch)
        started = time.perf_counter()
        try:
            result = await self.provider.embed(texts, into)
        except EmbeddingHTTPError as exc:
            if exc.status_code == 429:
                self.stats.rate_limited_responses += 1
                self._notify("rate_limited", 0, len(texts))
                await self.budget.penalize(exc.retry_after_s or 1.0)
            raise
        finally:
            self.stats.request_seconds += time.perf_counter() - started
        duration = time.perf_counter() - started
        if result.vectors is not None:  # an array of the provider's own: scatter it
            for caller, (dst, src) in batch.routes.items():
                if caller.result is not None:
                    caller.result[dst] = result.vectors[src]
        else:
            for array, row, pos in copies:
                array[row] = into[pos]
        if grant is not None:
            await self.budget.observe(grant, result.rate_limits)
        self._notify("ok", tokens, len(texts))
        self.stats.requests += 1
        self.stats.inputs += len(texts)
        self.stats.tokens += tokens
        log.info(
            "embedding.request",
            batch_size=len(texts),
            tokens=tokens,
            prompt_tokens=result.prompt_tokens,
            duration_ms=round(duration * 1000, 1),
            attempt=attempt,
            model=self.provider.model,
        )

    def _notify(self, outcome: str, tokens: int, inputs: int) -> None:
        for observer in self.observers:
            observer(outcome, tokens, inputs)

    def _before_retry(self, retry_state: RetryCallState) -> None:
        self.stats.retries += 1
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        log.info(
            "embedding.retry",
            attempt=retry_state.attempt_number,
            sleep_s=round(retry_state.upcoming_sleep, 3),
            error=str(exc),
            error_type=exc.__class__.__name__ if exc else None,
        )
