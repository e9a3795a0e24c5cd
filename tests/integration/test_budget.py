"""The fleet's shared embedding budget (worker/embedding/budget.py) on a real Redis.

Several ``SharedBudget`` objects on one key stand for several workers: what one takes,
the others cannot. Times come from Redis's clock; the assertions are on the waits the
budget assigned and on the tokens granted per window, not on how fast anything ran.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
import structlog
from redis.asyncio import Redis

from worker.embedding.budget import Limits, SharedBudget
from worker.embedding.ratelimit import RateLimitInfo
from worker.servers.embedded import EmbeddedRedis

# 60,000 tokens per 2 s "minute": bucket 3,000 tokens, bulk requests up to 2,250.
LIMITS = Limits(
    requests_per_minute=100_000,
    tokens_per_minute=60_000,
    period_s=2.0,
    headroom=0.95,
    burst_fraction=0.05,
    live_reserve=0.25,
)


def _budgets(redis: Redis, n: int, limits: Limits = LIMITS) -> list[SharedBudget]:
    key = f"cos:budget:test-{uuid.uuid4().hex[:8]}"
    return [SharedBudget(redis, key, f"w{i}", limits) for i in range(n)]


@pytest.fixture
async def redis(redis_server: EmbeddedRedis):
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_workers_together_hold_the_limit(redis: Redis) -> None:
    budgets = _budgets(redis, 3)
    grants: list[tuple[float, int]] = []
    stop = time.monotonic() + 5.0

    async def spend(b: SharedBudget) -> None:
        while time.monotonic() < stop:
            g = await b.take(1_500)
            grants.append((g.sent_at, 1_500))

    await asyncio.gather(*(spend(b) for b in budgets for _ in range(3)))
    grants.sort()
    # No window of the period holds more than the limit (capacity + refill <= limit).
    for i, (t0, _) in enumerate(grants):
        in_window = sum(n for t, n in grants[i:] if t < t0 + LIMITS.period_s)
        assert in_window <= LIMITS.tokens_per_minute, (t0 - grants[0][0], in_window)
    # ... and the three of them spent the budget, not a third of it each.
    steady = [n for t, n in grants if t >= grants[0][0] + LIMITS.period_s]
    span = grants[-1][0] - (grants[0][0] + LIMITS.period_s)
    assert sum(steady) / span > 0.5 * LIMITS.tokens_per_minute / LIMITS.period_s
    assert all(b.stats.shared_grants for b in budgets)
    assert all(b.stats.workers_seen == 3 for b in budgets)


async def test_live_requests_find_the_reserve_bulk_leaves(redis: Redis) -> None:
    bulk, live = _budgets(redis, 2)
    # Bulk drains what it may: each take leaves at least the live reserve in the bucket.
    for _ in range(3):
        await bulk.take(2_000)
    polls = bulk.stats.polls
    waiting = asyncio.create_task(bulk.take(2_000))
    await asyncio.sleep(0.05)
    assert bulk.stats.polls > polls  # bulk is told to come back ...
    grant = await live.take(500)
    assert grant.assigned_s == 0.0  # ... while a live request goes at once
    await waiting


async def test_a_429_pauses_every_worker(redis: Redis) -> None:
    a, b = _budgets(redis, 2)
    await a.take(10, live=True)
    await a.penalize(0.6)
    grant = await b.take(10, live=True)
    assert grant.assigned_s >= 0.55  # b never saw the 429; the budget made it wait


async def test_headers_cap_the_shared_level(redis: Redis) -> None:
    a, b = _budgets(redis, 2)
    first = await a.take(100, live=True)
    assert first.assigned_s == 0.0
    # The server says nothing is left: the fleet waits for the bucket to refill.
    await a.observe(first, RateLimitInfo(remaining_tokens=0, limit_tokens=60_000))
    grant = await b.take(100, live=True)
    assert grant.assigned_s > 0.0
    # A lower limit from the headers is adopted by every worker (half the rate: the
    # same request waits about twice as long as under the configured limit).
    c, d = _budgets(redis, 2)
    g = await c.take(3_000, live=True)
    await c.observe(g, RateLimitInfo(limit_tokens=30_000))
    slow = await d.take(1_000, live=True)
    e, f = _budgets(redis, 2)
    await e.take(3_000, live=True)
    fast = await f.take(1_000, live=True)
    assert slow.assigned_s > 1.5 * fast.assigned_s > 0


async def test_unreachable_redis_falls_back_to_a_local_share_and_says_so(
    tmp_path: Path,
) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    client = Redis.from_url(server.url, socket_timeout=0.3, socket_connect_timeout=0.3)
    [budget] = _budgets(client, 1)
    budget._script  # noqa: B018 - registered: EVALSHA falls back to EVAL on a new server
    try:
        await budget.take(100)
        budget.stats.workers_seen = 4  # as if three other workers shared it
        server.stop()
        with structlog.testing.capture_logs() as logs:
            grant = await budget.take(100)
        assert budget.degraded and budget.stats.fallback_grants == 1
        assert grant.seq_tokens is None
        [warning] = [e for e in logs if e["event"] == "embedding.budget_unreachable"]
        assert warning["share_of_limits"] == "1/4"
        assert warning["tokens_per_minute"] == 15_000
        server.start()
        await asyncio.sleep(1.1)  # RETRY_REDIS_EVERY_S
        with structlog.testing.capture_logs() as logs:
            grant = await budget.take(100)
        assert not budget.degraded and grant.seq_tokens is not None
        assert any(e["event"] == "embedding.budget_restored" for e in logs)
    finally:
        await client.aclose()
        server.stop()
