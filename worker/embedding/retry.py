"""When an embedding request is retried, and how long to wait (tenacity policies).

Transient failures (429, 5xx, timeouts, connection errors) are retried with exponential
backoff and jitter, never sooner than the server's ``Retry-After``; permanent ones
(400/401/403/404/422) fail at once; a malformed or misaligned body, usually a proxy
glitch, is retried a few times only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, wait_exponential_jitter
from tenacity.retry import retry_base

from worker.core.settings import Settings
from worker.embedding.base import EmbeddingError, EmbeddingResponseError

# Malformed/misaligned bodies are usually a proxy glitch: retry, but not for long.
RESPONSE_ERROR_MAX_ATTEMPTS = 3


class RetryPolicy(retry_base):
    """Retry transient failures; give up at once on permanent ones (400/401/403/404/422)."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None or not outcome.failed:
            return False
        exc = outcome.exception()
        if isinstance(exc, EmbeddingResponseError):
            return retry_state.attempt_number < RESPONSE_ERROR_MAX_ATTEMPTS
        return isinstance(exc, EmbeddingError) and exc.retryable


class RetryAfterWait:
    """Exponential backoff with jitter, but never shorter than the server's Retry-After."""

    def __init__(self, initial: float, max_wait: float) -> None:
        # tenacity >= 9.1 renamed ``initial`` to ``multiplier`` (and warns on the old name).
        if "multiplier" in inspect.signature(wait_exponential_jitter).parameters:
            self._backoff = wait_exponential_jitter(
                multiplier=initial, max=max_wait, jitter=initial
            )
        else:  # pragma: no cover - older tenacity
            self._backoff = wait_exponential_jitter(initial=initial, max=max_wait, jitter=initial)
        self._max = max_wait

    def __call__(self, retry_state: RetryCallState) -> float:
        backoff = float(self._backoff(retry_state))
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        retry_after = getattr(exc, "retry_after_s", None) or 0.0
        return max(backoff, min(float(retry_after), self._max))


def request_retrying(
    settings: Settings, initial_wait_s: float, before_sleep: Callable[[RetryCallState], None]
) -> AsyncRetrying:
    """The retry loop of one request: ``EMBED_MAX_RETRIES`` retries, waits capped at
    ``EMBED_RETRY_MAX_WAIT_S``; ``before_sleep`` counts and logs each retry."""
    return AsyncRetrying(
        stop=stop_after_attempt(settings.embed_max_retries + 1),
        wait=RetryAfterWait(initial_wait_s, settings.embed_retry_max_wait_s),
        retry=RetryPolicy(),
        before_sleep=before_sleep,
        reraise=True,
    )
