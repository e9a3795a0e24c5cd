"""Group writes: items that become ready together are written together.

When one embedding response answers a hundred jobs at once, a hundred small
transactions would follow. ``GroupWriter`` turns them into a few: a ready item is queued,
and each of up to ``writers`` flush tasks takes everything queued (up to ``max_items``)
and writes it as one group. Nothing waits on a timer: while a group is being written
the next one fills up, so a lone item is written at once and a burst is written in as
many groups as there are writers, then in what queued meanwhile ("smart batching").

A group that fails is retried item by item (``write_one``), so one bad item fails alone
and its neighbours are written; each caller gets its own item's result or exception.
``write_group`` may also return an exception in an item's place: that item fails alone
and the rest of the group stands.
An item submitted ``first`` (a live item's, ``worker.core.priority``) is written in a
group of first items only, ahead of everything queued without it, by a flush task of
its own (in the submitter's context: its kept connections, ``worker.db.pool``): a
backfill's writes do not stand in its way, and its own write is not one of a hundred.
Two items with the same ``key`` never share a group: the later one waits for the next.
A group also ends at ``max_size`` (by the ``size`` of its items: one statement carries
them all); an item bigger than that is written in a group of its own.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog

log = structlog.get_logger("worker.ingest.grouping")

W = TypeVar("W")
R = TypeVar("R")


@dataclass
class _Pending(Generic[W, R]):
    item: W
    key: Hashable
    future: asyncio.Future[R]


@dataclass
class GroupStats:
    groups: int = 0
    items: int = 0
    largest: int = 0
    fallbacks: int = 0  # groups that failed and were written item by item

    def as_dict(self) -> dict[str, Any]:
        return {
            "groups": self.groups,
            "items": self.items,
            "largest": self.largest,
            "fallbacks": self.fallbacks,
        }


class GroupWriter(Generic[W, R]):
    """Writes submitted items in groups; ``submit`` returns the item's own result."""

    def __init__(
        self,
        write_group: Callable[[Sequence[W]], Awaitable[Sequence[R | BaseException]]],
        write_one: Callable[[W], Awaitable[R]],
        key: Callable[[W], Hashable],
        *,
        writers: int,
        max_items: int,
        size: Callable[[W], int] = lambda _: 0,
        max_size: int | None = None,
    ) -> None:
        if writers < 1 or max_items < 1:
            raise ValueError("writers and max_items must be at least 1")
        self._size = size
        self._max_size = max_size
        self._write_group = write_group
        self._write_one = write_one
        self._key = key
        self._writers = writers
        self._max_items = max_items
        self._queue: deque[_Pending[W, R]] = deque()
        self._first: deque[_Pending[W, R]] = deque()  # taken before ``_queue``
        self._first_flusher = False  # a flush task for first items only is running
        self._flushers: set[asyncio.Task[None]] = set()
        self.stats = GroupStats()

    async def submit(self, item: W, *, first: bool = False) -> R:
        """Queue ``item`` and wait for its result. A caller cancelled before its group is
        taken is dropped from the queue; once taken, its group is written regardless (the
        write is atomic: it commits whole or not at all). ``first``: ahead of the rest."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        (self._first if first else self._queue).append(_Pending(item, self._key(item), future))
        if first and not self._first_flusher:
            self._first_flusher = True
            self._start(self._flush(first_only=True), inherit=True)
        elif not first and len(self._flushers) < self._writers:
            self._start(self._flush())
        return await future

    def _start(self, flush: Coroutine[Any, Any, None], *, inherit: bool = False) -> None:
        """A flush task; it runs in a fresh context unless ``inherit`` (the first items'
        own: a live submitter's context, e.g. its kept connections, must not carry over
        to the bulk groups a shared flush task writes)."""
        context = contextvars.copy_context() if inherit else contextvars.Context()
        task = asyncio.create_task(flush, context=context)
        self._flushers.add(task)
        task.add_done_callback(self._flushers.discard)

    def _take(self, first_only: bool = False) -> list[_Pending[W, R]]:
        group: list[_Pending[W, R]] = []
        keys: set[Hashable] = set()
        self._take_from(self._first, group, keys)
        if not group and not first_only:
            self._take_from(self._queue, group, keys)
        return group

    def _take_from(
        self, queue: deque[_Pending[W, R]], group: list[_Pending[W, R]], keys: set[Hashable]
    ) -> None:
        """Add what fits from ``queue`` to ``group``."""
        deferred: list[_Pending[W, R]] = []
        used = 0
        while queue and len(group) < self._max_items:
            p = queue.popleft()
            if p.future.done():  # its caller was cancelled while it waited
                continue
            if p.key in keys:
                deferred.append(p)
                continue
            size = self._size(p.item)
            if group and self._max_size is not None and used + size > self._max_size:
                deferred.append(p)  # the group is full by size: this one starts the next
                break
            keys.add(p.key)
            group.append(p)
            used += size
        queue.extendleft(reversed(deferred))

    async def _flush(self, first_only: bool = False) -> None:
        try:
            await self._flush_groups(first_only)
        finally:
            if first_only:
                self._first_flusher = False

    async def _flush_groups(self, first_only: bool) -> None:
        while group := self._take(first_only):
            self.stats.groups += 1
            self.stats.items += len(group)
            self.stats.largest = max(self.stats.largest, len(group))
            try:
                results = await self._write_group([p.item for p in group])
            except Exception as exc:  # noqa: BLE001 - each item is retried alone below
                if len(group) > 1:
                    self.stats.fallbacks += 1
                    log.warning(
                        "store.group_failed",
                        items=len(group),
                        error=f"{type(exc).__name__}: {exc}"[:300],
                    )
                    await asyncio.gather(*(self._one(p) for p in group))
                else:
                    _settle(group[0].future, exc=exc)
                continue
            for p, result in zip(group, results, strict=True):
                if isinstance(result, BaseException):  # that item failed alone, as recorded
                    _settle(p.future, exc=result)
                else:
                    _settle(p.future, result=result)

    async def _one(self, p: _Pending[W, R]) -> None:
        try:
            _settle(p.future, result=await self._write_one(p.item))
        except Exception as exc:  # noqa: BLE001 - handed to the item's caller
            _settle(p.future, exc=exc)

    async def aclose(self) -> None:
        """Wait for the groups being written (at shutdown, before the pool closes)."""
        while self._flushers:
            await asyncio.gather(*self._flushers, return_exceptions=True)


def _settle(
    future: asyncio.Future[Any], *, result: Any = None, exc: BaseException | None = None
) -> None:
    if future.done():  # the caller was cancelled meanwhile: nobody to tell
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
