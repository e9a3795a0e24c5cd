"""Packing rows into requests (worker.embedding.packing): pure bookkeeping, no servers."""

from __future__ import annotations

import asyncio

import pytest

from worker.embedding.packing import ROUND_ROBIN_QUANTUM, Caller, PendingRows


def _caller(
    loop: asyncio.AbstractEventLoop, texts: list[str], tokens: list[int] | None = None
) -> Caller:
    counts = tokens if tokens is not None else [1] * len(texts)
    return Caller(texts, counts, loop.create_future(), remaining=len(texts))


@pytest.fixture
def loop():
    """Callers hold futures; packing itself never runs the loop."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _routes(batch, caller: Caller) -> list[int]:
    return batch.routes[caller][0] if caller in batch.routes else []


def test_rows_are_taken_round_robin_so_a_big_caller_cannot_starve_a_small_one(loop) -> None:
    pending = PendingRows(max_inputs=ROUND_ROBIN_QUANTUM + 10, max_tokens=10**6)
    big = _caller(loop, [f"big {i}" for i in range(5 * ROUND_ROBIN_QUANTUM)])
    small = _caller(loop, ["small a", "small b"])
    pending.add(big, now=1.0)
    pending.add(small, now=2.0)
    rows = 5 * ROUND_ROBIN_QUANTUM + 2
    assert (pending.rows, pending.tokens, len(pending)) == (rows, rows, 2)
    batch = pending.pack(now=3.0)
    # One quantum of the big caller, then the small one whole, then the rest of the room.
    assert _routes(batch, small) == [0, 1]
    assert len(_routes(batch, big)) == ROUND_ROBIN_QUANTUM + 8
    assert len(batch.texts) == batch.rows == ROUND_ROBIN_QUANTUM + 10
    assert pending.rows == 5 * ROUND_ROBIN_QUANTUM - ROUND_ROBIN_QUANTUM - 8
    assert pending.first_at == 1.0  # leftovers keep their arrival time
    assert pending.packed_at == 3.0


def test_identical_texts_are_sent_once_and_routed_to_every_row(loop) -> None:
    pending = PendingRows(max_inputs=100, max_tokens=100)
    a = _caller(loop, ["same", "other", "same"], [5, 3, 5])
    b = _caller(loop, ["same"], [5])
    pending.add(a, now=0.0)
    pending.add(b, now=0.0)
    batch = pending.pack(now=1.0)
    assert batch.texts == ["same", "other"] and batch.tokens == 8
    assert batch.routes[a] == ([0, 1, 2], [0, 1, 0])
    assert batch.routes[b] == ([0], [0])
    assert batch.deduplicated == 2 and batch.rows == 4
    assert (pending.rows, pending.tokens, len(pending), pending.first_at) == (0, 0, 0, None)


def test_a_request_closes_before_the_token_cap_and_an_oversized_text_goes_alone(loop) -> None:
    pending = PendingRows(max_inputs=100, max_tokens=10)
    c = _caller(loop, ["a", "b", "c", "huge", "d"], [4, 4, 4, 50, 1])
    pending.add(c, now=0.0)
    assert pending.full()
    sizes = []
    while len(pending):
        batch = pending.pack(now=0.0)
        sizes.append((batch.texts, batch.tokens))
    assert sizes == [(["a", "b"], 8), (["c"], 4), (["huge"], 50), (["d"], 1)]
    assert not pending.full() and pending.rows == 0


def test_a_failed_caller_is_dropped_with_its_unpacked_rows(loop) -> None:
    pending = PendingRows(max_inputs=2, max_tokens=100)
    dead = _caller(loop, ["x", "y", "z"], [1, 2, 3])
    live = _caller(loop, ["w"], [7])
    pending.add(dead, now=0.0)
    pending.add(live, now=0.0)
    first = pending.pack(now=0.0)
    assert first.texts == ["x", "y"]
    dead.future.set_exception(RuntimeError("request failed"))
    dead.future.exception()  # retrieved: no "never retrieved" warning
    second = pending.pack(now=0.0)
    assert second.texts == ["w"] and dead not in second.routes
    assert (pending.rows, pending.tokens, len(pending)) == (0, 0, 0)


def test_live_rows_go_first_in_requests_of_their_own(loop) -> None:
    pending = PendingRows(max_inputs=100, max_tokens=10**6)
    bulk = _caller(loop, [f"old {i}" for i in range(50)])
    live = _caller(loop, ["fresh a", "fresh b"])
    live.live = True
    pending.add(bulk, 0.0)
    pending.add(live, 1.0)
    assert pending.live_rows == 2 and pending.rows == 52
    first = pending.pack(2.0)
    assert first.live and _routes(first, live) == [0, 1] and bulk not in first.routes
    assert pending.live_rows == 0
    second = pending.pack(3.0)
    assert not second.live and len(_routes(second, bulk)) == 50


def test_a_failed_live_caller_leaves_no_live_rows_behind(loop) -> None:
    pending = PendingRows(max_inputs=100, max_tokens=10**6)
    live = _caller(loop, ["a", "b", "c"])
    live.live = True
    pending.add(live, 0.0)
    live.future.set_exception(RuntimeError("request failed"))
    pending.drop(live)
    assert pending.live_rows == 0 and pending.rows == 0
    assert pending.pack(1.0).rows == 0
