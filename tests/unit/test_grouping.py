"""Group writes (worker.ingest.grouping.GroupWriter): grouping, isolation and cancellation, with
plain coroutines standing in for the database write (the SQL is tested in
tests/integration/test_store_page.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from worker.ingest.grouping import GroupWriter


class Recorder:
    """Write functions that record what they were given; "bad" items fail."""

    def __init__(self, delay: float = 0.01) -> None:
        self.delay = delay
        self.groups: list[list[str]] = []
        self.alone: list[str] = []

    async def group(self, items: Sequence[str]) -> list[str]:
        self.groups.append(list(items))
        await asyncio.sleep(self.delay)
        if any(i.startswith("bad") for i in items):
            raise RuntimeError("a constraint failed")
        return [f"ok {i}" for i in items]

    async def one(self, item: str) -> str:
        self.alone.append(item)
        await asyncio.sleep(self.delay)
        if item.startswith("bad"):
            raise ValueError(f"{item} is bad")
        return f"alone {item}"


def _writer(rec: Recorder, writers: int = 2, max_items: int = 10) -> GroupWriter[str, str]:
    return GroupWriter(
        rec.group, rec.one, lambda i: i.split("#")[0], writers=writers, max_items=max_items
    )


async def test_a_burst_is_written_in_few_groups_and_each_caller_gets_its_own_result() -> None:
    rec = Recorder()
    writer = _writer(rec, writers=2, max_items=10)
    items = [f"item{i}" for i in range(25)]
    results = await asyncio.gather(*(writer.submit(i) for i in items))
    assert results == [f"ok {i}" for i in items]
    # Both writers start at once with what is queued, then take what queued meanwhile.
    assert [len(g) for g in rec.groups] == [10, 10, 5]
    assert sorted(i for g in rec.groups for i in g) == sorted(items)
    assert rec.alone == []
    assert (writer.stats.groups, writer.stats.items, writer.stats.largest) == (3, 25, 10)


async def test_a_lone_item_is_written_at_once() -> None:
    rec = Recorder()
    writer = _writer(rec)
    assert await writer.submit("solo") == "ok solo"
    assert rec.groups == [["solo"]]


async def test_two_jobs_of_one_item_never_share_a_group_and_keep_their_order() -> None:
    rec = Recorder()
    writer = _writer(rec, writers=1)
    results = await asyncio.gather(*(writer.submit(i) for i in ("x#1", "y", "x#2", "x#3")))
    assert results == ["ok x#1", "ok y", "ok x#2", "ok x#3"]
    assert rec.groups == [["x#1", "y"], ["x#2"], ["x#3"]]


async def test_a_failing_group_is_written_item_by_item_so_only_the_bad_item_fails() -> None:
    rec = Recorder()
    writer = _writer(rec, writers=1)
    outcomes = await asyncio.gather(
        *(writer.submit(i) for i in ("a", "bad1", "b")), return_exceptions=True
    )
    assert outcomes[0] == "alone a" and outcomes[2] == "alone b"
    assert isinstance(outcomes[1], ValueError) and "bad1 is bad" in str(outcomes[1])
    assert rec.groups == [["a", "bad1", "b"]]
    assert sorted(rec.alone) == ["a", "b", "bad1"]
    assert writer.stats.fallbacks == 1


async def test_a_failing_group_of_one_fails_its_caller_without_a_second_write() -> None:
    rec = Recorder()
    writer = _writer(rec)
    with pytest.raises(RuntimeError, match="a constraint failed"):
        await writer.submit("bad-alone")
    assert rec.alone == [] and writer.stats.fallbacks == 0


async def test_a_caller_cancelled_while_queued_is_not_written() -> None:
    rec = Recorder(delay=0.05)
    writer = _writer(rec, writers=1)
    first = asyncio.create_task(writer.submit("first"))
    await asyncio.sleep(0.01)  # "first" is being written; the next ones queue
    gone = asyncio.create_task(writer.submit("gone"))
    kept = asyncio.create_task(writer.submit("kept"))
    await asyncio.sleep(0)
    gone.cancel()
    assert await first == "ok first" and await kept == "ok kept"
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert rec.groups == [["first"], ["kept"]]


async def test_a_group_being_written_finishes_even_if_its_caller_is_cancelled() -> None:
    rec = Recorder(delay=0.05)
    writer = _writer(rec)
    task = asyncio.create_task(writer.submit("taken"))
    await asyncio.sleep(0.01)
    task.cancel()
    await writer.aclose()  # waits for the group in flight
    assert rec.groups == [["taken"]] and task.cancelled()


async def test_a_group_ends_at_its_size_budget_and_a_big_item_goes_alone() -> None:
    rec = Recorder()
    writer = GroupWriter(
        rec.group,
        rec.one,
        lambda i: i,
        writers=1,
        max_items=10,
        size=lambda i: int(i.split(":")[1]),
        max_size=100,
    )
    items = ["a:40", "b:40", "c:40", "d:500", "e:10", "f:10"]
    results = await asyncio.gather(*(writer.submit(i) for i in items))
    assert results == [f"ok {i}" for i in items]
    # 40 + 40 fit in 100, a third 40 does not; 500 is over the budget on its own.
    assert rec.groups == [["a:40", "b:40"], ["c:40"], ["d:500"], ["e:10", "f:10"]]


def test_bad_limits_are_refused() -> None:
    rec = Recorder()
    with pytest.raises(ValueError):
        _writer(rec, writers=0)
    with pytest.raises(ValueError):
        _writer(rec, max_items=0)


async def test_an_item_submitted_first_is_taken_ahead_of_the_queue() -> None:
    groups: list[list[str]] = []
    gate = asyncio.Event()

    async def write_group(items):
        groups.append(list(items))
        await gate.wait()
        return list(items)

    async def write_one(item):
        return item

    writer = GroupWriter(write_group, write_one, lambda i: i, writers=1, max_items=2)
    bulk = [asyncio.create_task(writer.submit(f"bulk{i}")) for i in range(5)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first group (bulk0, bulk1) is being written
    live = asyncio.create_task(writer.submit("live", first=True))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    # The only writer is busy: a flush task of its own writes the live item, alone.
    assert groups == [["bulk0", "bulk1"], ["live"]]
    gate.set()
    await asyncio.gather(*bulk, live)
    assert groups[2:] == [["bulk2", "bulk3"], ["bulk4"]]
