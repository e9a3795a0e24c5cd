"""Rate limiter on virtual time: pacing, header tightening, 429 penalties, parsing."""

from __future__ import annotations

import asyncio

import pytest

from worker.embedding.ratelimit import RateLimiter, RateLimitInfo, parse_duration


class FakeClock:
    """Virtual time: ``sleep`` advances the clock instantly."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


def make(rpm: float = 600, tpm: float = 60_000, **kw: float) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(rpm, tpm, clock=clock, sleep=clock.sleep, **kw), clock


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1s", 1.0),
        ("1h2m3.5s", 3723.5),
        ("17.678s", 17.678),
        ("0.5", 0.5),
        ("", None),
        ("soon", None),
        (None, None),
    ],
)
def test_parse_duration(text: str | None, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_rate_limit_info_from_headers() -> None:
    info = RateLimitInfo.from_headers(
        {
            "x-ratelimit-limit-requests": "3000",
            "x-ratelimit-limit-tokens": "1000000",
            "x-ratelimit-remaining-requests": "2999",
            "x-ratelimit-remaining-tokens": "999500",
            "x-ratelimit-reset-requests": "20ms",
            "x-ratelimit-reset-tokens": "6m0s",
            "retry-after": "2",
            "retry-after-ms": "1500",
        }
    )
    assert info == RateLimitInfo(3000, 1_000_000, 2999, 999_500, 0.02, 360.0, 1.5)
    assert RateLimitInfo.from_headers({"content-type": "application/json"}) is None
    assert RateLimitInfo.from_headers({"retry-after": "3"}) == RateLimitInfo(retry_after_s=3.0)


async def test_sustained_rate_is_headroom_of_limit_and_never_exceeds_any_window() -> None:
    """Over 10 virtual minutes: >= 90 % of TPM, and no sliding minute above the limit."""
    limiter, clock = make(rpm=10_000, tpm=60_000)
    grants: list[tuple[float, int]] = []
    start = clock.t
    while clock.t - start < 600:
        await limiter.acquire(2000)
        grants.append((clock.t, 2000))
    total = sum(n for _, n in grants)
    assert total / 10 >= 0.9 * 60_000
    times = [t for t, _ in grants]
    j = 0
    window = 0
    for i, (t, n) in enumerate(grants):  # sliding 60 s window ending at each grant
        window += n
        while times[j] <= t - 60:
            window -= grants[j][1]
            j += 1
        assert window <= 60_000, f"window ending at grant {i} used {window}"


async def test_requests_per_minute_budget_paces_small_requests() -> None:
    limiter, clock = make(rpm=120, tpm=10_000_000)
    start = clock.t
    for _ in range(120):
        await limiter.acquire(1)
    elapsed = clock.t - start
    # 120 requests at 95 % of 2/s, minus the small initial burst (6 requests)
    assert 55 <= elapsed <= 62


async def test_oversized_request_is_admitted_when_full_then_goes_into_debt() -> None:
    limiter, clock = make(tpm=60_000)
    assert limiter.max_request_tokens == 3000
    assert await limiter.acquire(8000) == 0  # bucket full: admitted at once
    waited = await limiter.acquire(100)
    # debt of 5000 tokens + 100 at 950 tokens/s
    assert waited == pytest.approx(5100 / 950, rel=0.01)


async def test_penalize_pauses_everyone_and_restarts_empty() -> None:
    limiter, clock = make()
    limiter.penalize(2.0)
    assert limiter.paused_for == pytest.approx(2.0)
    assert not limiter.try_acquire(10)
    waited = await limiter.acquire(10)
    assert waited >= 2.0
    assert limiter.stats.penalties == 1


async def test_headers_tighten_but_never_loosen() -> None:
    limiter, clock = make(rpm=600, tpm=60_000)
    sent = limiter.now()
    clock.t += 0.001
    assert await limiter.acquire(1000) == 0
    # The server already counts 1000 tokens elsewhere (another process): 500 remaining.
    # The request carrying these headers was granted before ours (sent_at=sent), so the
    # 1000 tokens we took since then are subtracted too.
    limiter.update_from_headers(RateLimitInfo(remaining_tokens=1500), sent_at=sent)
    assert limiter.tokens.level == pytest.approx(500)
    # A generous server view does not raise our level above the local bucket.
    limiter.update_from_headers(RateLimitInfo(remaining_tokens=10**9))
    assert limiter.tokens.level == pytest.approx(500)
    # A lower account limit is adopted; a higher one is ignored.
    limiter.update_from_headers(RateLimitInfo(limit_tokens=30_000))
    assert limiter.tokens.limit == 30_000
    limiter.update_from_headers(RateLimitInfo(limit_tokens=90_000))
    assert limiter.tokens.limit == 60_000
    limiter.update_from_headers(RateLimitInfo(remaining_requests=0))
    assert limiter.wait_time(1) > 0


async def test_acquire_is_fifo_under_contention() -> None:
    limiter, clock = make(tpm=60_000)
    order: list[str] = []

    async def take(name: str, tokens: int) -> None:
        await limiter.acquire(tokens)
        order.append(name)

    await asyncio.gather(
        take("big", 3000), take("small1", 10), take("big2", 3000), take("small2", 10)
    )
    assert order == ["big", "small1", "big2", "small2"]


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0, 100)
    with pytest.raises(ValueError):
        RateLimiter(10, 100, headroom=1.5)
