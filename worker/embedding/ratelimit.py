"""Client-side request/token budgets for the embeddings API.

Why a client-side limiter at all: OpenAI answers over-limit traffic with 429s, and every
429 is a wasted round trip plus a backoff sleep. Pacing requests locally lets the worker
run just under the account limit instead of oscillating around it.

Model: one token bucket per budget (requests-per-minute and tokens-per-minute), refilling
continuously at ``headroom * limit / period``. The bucket *capacity* is deliberately a
small slice of the per-minute limit (``burst_fraction``): the tokens any 60 s window can
see is at most ``capacity + refill_per_minute``, so with ``burst_fraction + headroom <= 1``
the limiter never exceeds the limit even if the server counts a strict sliding minute,
and it is equally safe against a server that itself uses a token bucket (OpenAI's
``x-ratelimit-reset-*`` headers describe one). Steady-state throughput is
``headroom`` (95 % by default) of the limit.

A request larger than the capacity is admitted once the bucket is full and drives the
level negative (debt), so it can never deadlock; callers should keep single requests
under :attr:`RateLimiter.max_request_tokens` to keep the guarantee above.

The clock and sleep function are injectable so unit tests run on virtual time.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: str | None) -> float | None:
    """Parse OpenAI reset durations ("6m0s", "20ms", "1s", "1h2m3.5s", "0.5") to seconds.

    Returns None for missing or unparseable values: a bad header must never break a
    successful request.
    """
    if value is None:
        return None
    text = value.strip().lower()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        number, unit = float(match.group(1)), match.group(2)
        total += number * {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}[unit]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


def _int_header(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value.strip()))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """What the API told us about our budgets in one response's headers."""

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None
    retry_after_s: float | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimitInfo | None:
        """Read the ``x-ratelimit-*`` / ``retry-after(-ms)`` headers; None when absent."""
        get = headers.get
        retry_after: float | None = None
        ms = get("retry-after-ms")
        if ms is not None:
            try:
                retry_after = max(0.0, float(ms) / 1000.0)
            except ValueError:
                retry_after = None
        if retry_after is None:
            # Retry-After may also be an HTTP date; we only honour the seconds form.
            retry_after = parse_duration(get("retry-after"))
        info = cls(
            limit_requests=_int_header(get("x-ratelimit-limit-requests")),
            limit_tokens=_int_header(get("x-ratelimit-limit-tokens")),
            remaining_requests=_int_header(get("x-ratelimit-remaining-requests")),
            remaining_tokens=_int_header(get("x-ratelimit-remaining-tokens")),
            reset_requests_s=parse_duration(get("x-ratelimit-reset-requests")),
            reset_tokens_s=parse_duration(get("x-ratelimit-reset-tokens")),
            retry_after_s=retry_after,
        )
        return None if info == cls() else info


class TokenBucket:
    """One continuously refilling budget. Pure arithmetic; time is passed in."""

    def __init__(
        self, limit: float, *, period_s: float, headroom: float, burst_fraction: float, now: float
    ) -> None:
        if limit <= 0 or period_s <= 0:
            raise ValueError("limit and period must be positive")
        self.configured_limit = float(limit)
        self.period_s = period_s
        self.headroom = headroom
        self.burst_fraction = burst_fraction
        self.limit = float(limit)
        self.level = self.capacity
        self._updated = now

    @property
    def capacity(self) -> float:
        return max(self.limit * self.burst_fraction, 1e-9)

    @property
    def rate(self) -> float:
        """Refill per second."""
        return self.limit * self.headroom / self.period_s

    def refill(self, now: float) -> None:
        if now > self._updated:
            self.level = min(self.capacity, self.level + (now - self._updated) * self.rate)
        self._updated = max(self._updated, now)

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` may be taken (0 = now). Oversized amounts wait for full."""
        self.refill(now)
        need = min(amount, self.capacity)
        if self.level >= need:
            return 0.0
        return (need - self.level) / self.rate

    def take(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level -= amount

    def cap_level(self, ceiling: float, now: float) -> None:
        self.refill(now)
        self.level = min(self.level, ceiling)

    def tighten_limit(self, limit: float) -> None:
        """Adopt a lower limit reported by the server (never raise above configuration)."""
        new = min(self.configured_limit, float(limit))
        if new > 0:
            self.limit = new
            self.level = min(self.level, self.capacity)


@dataclass(slots=True)
class RateLimiterStats:
    acquired_requests: int = 0
    acquired_tokens: int = 0
    waited_s: float = 0.0
    penalties: int = 0


class RateLimiter:
    """Requests-per-minute and tokens-per-minute budgets shared by every request in a process.

    ``acquire`` is FIFO (one waiter at a time holds the lock), so a large request cannot
    be starved by a stream of small ones.
    """

    def __init__(
        self,
        requests_per_minute: float,
        tokens_per_minute: float,
        *,
        period_s: float = 60.0,
        headroom: float = 0.95,
        burst_fraction: float = 0.05,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not 0 < headroom <= 1 or not 0 < burst_fraction <= 1:
            raise ValueError("headroom and burst_fraction must be in (0, 1]")
        self._clock = clock
        self._sleep = sleep
        now = clock()
        kw = {"period_s": period_s, "headroom": headroom, "burst_fraction": burst_fraction}
        self.requests = TokenBucket(requests_per_minute, now=now, **kw)
        self.tokens = TokenBucket(tokens_per_minute, now=now, **kw)
        self._paused_until = now
        self._lock = asyncio.Lock()
        # Recent grants (time, tokens), so header updates can discount requests the server
        # had not yet seen when it computed "remaining".
        self._grants: deque[tuple[float, int]] = deque()
        self._grant_window_s = period_s
        self.stats = RateLimiterStats()

    def now(self) -> float:
        """The limiter's clock (pass to ``update_from_headers(sent_at=...)``)."""
        return self._clock()

    @property
    def max_request_tokens(self) -> int:
        """Largest request that keeps the never-exceed guarantee (the token bucket capacity)."""
        return max(1, int(self.tokens.capacity))

    def wait_time(self, tokens: int) -> float:
        """Seconds until a request of ``tokens`` may be sent; 0 means now."""
        now = self._clock()
        return max(
            self._paused_until - now,
            self.requests.wait_for(1, now),
            self.tokens.wait_for(tokens, now),
            0.0,
        )

    def try_acquire(self, tokens: int) -> bool:
        """Take the budget if available right now (no waiting)."""
        if self.wait_time(tokens) > 0:
            return False
        now = self._clock()
        self.requests.take(1, now)
        self.tokens.take(tokens, now)
        self._grants.append((now, tokens))
        while self._grants and self._grants[0][0] < now - self._grant_window_s:
            self._grants.popleft()
        self.stats.acquired_requests += 1
        self.stats.acquired_tokens += tokens
        return True

    async def acquire(self, tokens: int) -> float:
        """Wait until both budgets allow one request of ``tokens``; returns seconds waited."""
        if tokens < 0:
            raise ValueError("tokens must be >= 0")
        start = self._clock()
        async with self._lock:
            while not self.try_acquire(tokens):
                await self._sleep(max(self.wait_time(tokens), 0.001))
        waited = self._clock() - start
        self.stats.waited_s += waited
        return waited

    def _acquired_since(self, since: float) -> int:
        return sum(n for t, n in self._grants if t > since)

    def _requests_since(self, since: float) -> int:
        return sum(1 for t, _ in self._grants if t > since)

    def update_from_headers(
        self, info: RateLimitInfo | None, *, sent_at: float | None = None
    ) -> None:
        """Tighten the local view with what the server reported.

        ``sent_at`` (limiter clock) is when the request carrying these headers was granted;
        budget granted after it was invisible to the server, so it is subtracted from the
        server's "remaining". The server can only lower our local level/limit, never raise
        it: it may be shared with other processes using the same key.
        """
        if info is None:
            return
        now = self._clock()
        since = now if sent_at is None else sent_at
        if info.limit_tokens:
            self.tokens.tighten_limit(info.limit_tokens)
        if info.limit_requests:
            self.requests.tighten_limit(info.limit_requests)
        if info.remaining_tokens is not None:
            ceiling = info.remaining_tokens - self._acquired_since(since)
            self.tokens.cap_level(float(ceiling), now)
        if info.remaining_requests is not None:
            ceiling = info.remaining_requests - self._requests_since(since)
            self.requests.cap_level(float(ceiling), now)

    def penalize(self, retry_after_s: float) -> None:
        """After a 429: nobody sends anything for ``retry_after_s`` and the buckets restart empty."""
        now = self._clock()
        self.stats.penalties += 1
        self._paused_until = max(self._paused_until, now + max(0.0, retry_after_s))
        self.tokens.cap_level(0.0, now)
        self.requests.cap_level(0.0, now)

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())
