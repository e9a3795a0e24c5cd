"""One embedding budget for a fleet of workers: the account's limits, kept in Redis.

Why: OpenAI's tokens- and requests-per-minute limits belong to the account (per model),
not to a process. Each worker pacing itself with its own bucket spends N budgets with N
workers, and the 429s that follow correct it only after the fact. Here every worker
takes from one pair of buckets in Redis, through one atomic script, so N workers on M
machines together hold the limits each of them is told.

The buckets (``budget.lua``) are GCRA token buckets on Redis's clock: each holds a
"theoretical arrival time", so nothing in Redis belongs to a worker. A worker that dies
mid-request leaks at most the tokens it took and never sent, which the bucket refills
within one burst (``burst_fraction`` of the period): never longer than one window. The
buckets' shape is the local limiter's (``ratelimit.py``): refill at ``headroom`` of the
limit, capacity ``burst_fraction`` of it, so a strict sliding minute is never exceeded.

Priority (issue 20's fairness): *live* requests (recent, small items) may use the whole
bucket and queue FIFO behind each other; *bulk* requests (backfill) may only take tokens
while ``live_reserve`` of the bucket stays free, and poll otherwise. A live request then
finds its tokens at once in a bucket that bulk load keeps busy, while bulk still gets
the whole refill rate (the reserve is level, not rate: no budget is left idle).

Response headers feed the shared buckets as they fed the local one: a lower limit is
adopted, and ``remaining`` caps the level, minus what the fleet was granted after the
request that carried it. A 429 pauses every worker for its retry-after.

If Redis does not answer within ``embed_budget_timeout_s``, the worker falls back to a
local limiter holding its share of the limits (the limits divided by the workers seen
taking from the budget in the last window), says so in the logs, and tries Redis again
every second.

Configuration: the budget's key is ``EMBED_BUDGET_ID``; unset, it is derived from the API
base URL, key and model, so workers sharing a key and model share a budget. Several keys
or models are several budgets. Set the same id on workers whose keys belong to one
OpenAI organization (limits are per organization and model).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from worker.core.settings import Settings
from worker.embedding.ratelimit import RateLimiter, RateLimitInfo

log = structlog.get_logger(__name__)

_SCRIPT = (Path(__file__).with_name("budget.lua")).read_text()
#: While Redis is unreachable, it is tried again at most this often.
RETRY_REDIS_EVERY_S = 1.0


def budget_id(base_url: str, api_key: str, model: str) -> str:
    """The default budget name: one per (API endpoint, key, model), never the key itself."""
    material = "\0".join((base_url or "https://api.openai.com/v1", api_key, model))
    return f"{model}:{hashlib.sha256(material.encode()).hexdigest()[:16]}"


@dataclass(frozen=True, slots=True)
class Grant:
    """Permission to send one request: how long it waited, and what the header feedback
    needs (when it was granted on the local clock; the fleet's counters after it)."""

    waited_s: float
    sent_at: float
    seq_tokens: int | None = None
    seq_requests: int | None = None
    assigned_s: float = 0.0  # the wait the shared budget gave it when it was granted


class Budget(Protocol):
    """What the batcher needs from a rate budget (local or shared)."""

    @property
    def max_request_tokens(self) -> int: ...

    async def take(self, tokens: int, *, live: bool = False) -> Grant: ...

    async def observe(self, grant: Grant, info: RateLimitInfo | None) -> None: ...

    async def penalize(self, retry_after_s: float) -> None: ...


class LocalBudget:
    """One process's own limiter (tests, and the fallback while Redis is away)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    @property
    def max_request_tokens(self) -> int:
        return self.limiter.max_request_tokens

    async def take(self, tokens: int, *, live: bool = False) -> Grant:
        waited = await self.limiter.acquire(tokens)
        return Grant(waited, self.limiter.now())

    async def observe(self, grant: Grant, info: RateLimitInfo | None) -> None:
        self.limiter.update_from_headers(info, sent_at=grant.sent_at)

    async def penalize(self, retry_after_s: float) -> None:
        self.limiter.penalize(retry_after_s)


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits a worker is told (the account's), and the buckets' shape."""

    requests_per_minute: float
    tokens_per_minute: float
    period_s: float
    headroom: float
    burst_fraction: float
    live_reserve: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits and shape ``EMBED_*`` configure (every worker is told the account's)."""
        return cls(
            requests_per_minute=settings.embed_requests_per_minute,
            tokens_per_minute=settings.embed_tokens_per_minute,
            period_s=settings.embed_rate_period_s,
            headroom=settings.embed_rate_headroom,
            burst_fraction=settings.embed_rate_burst_fraction,
            live_reserve=settings.embed_live_reserve,
        )

    def args(self) -> list[Any]:
        return [
            self.tokens_per_minute,
            self.requests_per_minute,
            self.period_s * 1000.0,
            self.headroom,
            self.burst_fraction,
        ]

    def local(self, share: int) -> RateLimiter:
        """A local limiter holding 1/``share`` of the limits."""
        n = max(1, share)
        return RateLimiter(
            self.requests_per_minute / n,
            self.tokens_per_minute / n,
            period_s=self.period_s,
            headroom=self.headroom,
            burst_fraction=self.burst_fraction,
        )


@dataclass(slots=True)
class BudgetStats:
    shared_grants: int = 0
    polls: int = 0  # bulk requests told to come back (the reserve or an empty bucket)
    fallback_grants: int = 0
    redis_errors: int = 0
    workers_seen: int = 1  # workers that took from the budget in the last window


class SharedBudget:
    """The account's budget in Redis (``budget.lua``), with a local fallback."""

    def __init__(
        self,
        redis: Redis,
        key: str,
        worker_id: str,
        limits: Limits,
        *,
        timeout_s: float = 0.5,
    ) -> None:
        self._redis = redis
        self.key = key
        self._keys = [key, key + ":workers"]
        self._worker = worker_id
        self.limits = limits
        self._timeout = timeout_s
        self._script = redis.register_script(_SCRIPT)
        self._fallback: LocalBudget | None = None
        self._redis_retry_at = 0.0
        self.stats = BudgetStats()

    @property
    def max_request_tokens(self) -> int:
        """Bulk requests must fit the bucket without the live reserve."""
        capacity = self.limits.tokens_per_minute * self.limits.burst_fraction
        return max(1, int(capacity * (1.0 - self.limits.live_reserve)))

    @property
    def degraded(self) -> bool:
        """Whether the worker runs on its local share (Redis unreachable)."""
        return self._fallback is not None

    async def _call(self, *args: Any) -> list[Any] | None:
        """Run the script; None (and the fallback) when Redis does not answer in time."""
        if self._fallback is not None and time.monotonic() < self._redis_retry_at:
            return None
        try:
            result = await asyncio.wait_for(
                self._script(keys=self._keys, args=list(args)), self._timeout
            )
        except (RedisError, OSError, TimeoutError) as exc:
            self.stats.redis_errors += 1
            self._redis_retry_at = time.monotonic() + RETRY_REDIS_EVERY_S
            if self._fallback is None:
                share = self.stats.workers_seen
                self._fallback = LocalBudget(self.limits.local(share))
                log.warning(
                    "embedding.budget_unreachable",
                    error_type=exc.__class__.__name__,
                    share_of_limits=f"1/{share}",
                    tokens_per_minute=round(self.limits.tokens_per_minute / share),
                )
            return None
        if self._fallback is not None:
            self._fallback = None
            log.info("embedding.budget_restored")
        return list(result)

    async def take(self, tokens: int, *, live: bool = False) -> Grant:
        """Wait until the fleet's budget admits one request of ``tokens``."""
        started = time.monotonic()
        while True:
            result = await self._call(
                "take",
                *self.limits.args(),
                tokens,
                self.limits.live_reserve,
                1 if live else 0,
                self._worker,
            )
            if result is None:
                assert self._fallback is not None
                grant = await self._fallback.take(tokens, live=live)
                self.stats.fallback_grants += 1
                return Grant(time.monotonic() - started, grant.sent_at)
            granted, wait_ms, seq_t, seq_r, workers = result
            self.stats.workers_seen = max(1, int(workers))
            wait_s = float(wait_ms) / 1000.0
            if int(granted):
                self.stats.shared_grants += 1
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                now = time.monotonic()
                return Grant(now - started, now, int(seq_t), int(seq_r), wait_s)
            self.stats.polls += 1
            await asyncio.sleep(max(wait_s, 0.001))

    async def observe(self, grant: Grant, info: RateLimitInfo | None) -> None:
        """Feed a response's rate-limit headers into the shared buckets."""
        if info is None:
            return
        if grant.seq_tokens is None or grant.seq_requests is None:
            if self._fallback is not None:
                await self._fallback.observe(grant, info)
            return

        def opt(value: float | None) -> float | str:
            return "" if value is None else value

        await self._call(
            "observe",
            *self.limits.args(),
            opt(info.limit_tokens),
            opt(info.limit_requests),
            opt(info.remaining_tokens),
            opt(info.remaining_requests),
            grant.seq_tokens,
            grant.seq_requests,
        )

    async def penalize(self, retry_after_s: float) -> None:
        """A 429: every worker of the fleet pauses for ``retry_after_s``; buckets restart empty."""
        done = await self._call("penalize", *self.limits.args(), retry_after_s * 1000.0)
        if done is None and self._fallback is not None:
            await self._fallback.penalize(retry_after_s)

    async def aclose(self) -> None:
        """Close the Redis client the budget was given (it is the budget's own)."""
        await self._redis.aclose()
