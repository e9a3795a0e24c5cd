"""Packing queued rows of many callers into requests: bookkeeping only, no I/O.

Why its own module: which rows go into which request decides how many requests a corpus
costs (figure 2 of the benchmark) and whether a big job can starve a small one. Keeping
it apart from the dispatcher's timing (``linger``) and the HTTP calls (``batcher``) lets
each be read, and tested, on its own.

Rules: live callers (fresh items: ``embed(live=True)``) go first, in requests of their
own, so a backfill's rows never stand between a new e-mail and its request; rows are
taken round-robin across callers, ``ROUND_ROBIN_QUANTUM`` per caller per
pass, so a 50k-chunk job shares each request with 5-chunk ones; identical texts within a
request are sent once and their vector is scattered to every row that asked for it; a
request closes at ``max_inputs`` inputs or when the next text would pass ``max_tokens``
(a single text above the cap still goes, alone).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

# How many rows one caller contributes per round-robin pass while packing a request.
ROUND_ROBIN_QUANTUM = 256


@dataclass(eq=False, slots=True)
class Caller:
    """One ``embed`` call: its rows, where their vectors go, and how far it is packed."""

    texts: list[str]
    tokens: list[int]
    future: asyncio.Future[np.ndarray]
    # allocated when its first vectors arrive, not when it queues: under a tight budget
    # the callers of every admitted item wait here (a 9,127-row backfill: 56 MB of
    # arrays waiting for tokens)
    result: np.ndarray | None = None
    cursor: int = 0  # next row not yet packed
    remaining: int = 0  # rows not yet filled
    live: bool = False  # a live item's rows: packed ahead of bulk, in requests of their own

    @property
    def dead(self) -> bool:
        return self.future.done()


@dataclass(slots=True)
class Batch:
    """One request's inputs and, per caller, which of its rows each input fills."""

    texts: list[str] = field(default_factory=list)
    tokens: int = 0
    # per caller: (destination rows, source positions in ``texts``)
    routes: dict[Caller, tuple[list[int], list[int]]] = field(default_factory=dict)
    rows: int = 0
    deduplicated: int = 0  # rows served by an identical text already in the request
    closed: bool = False  # the next row did not fit: stop packing
    live: bool = False  # live callers' rows only (the budget serves it first)


class PendingRows:
    """Callers with rows not yet in a request, in arrival order, and their totals."""

    def __init__(self, max_inputs: int, max_tokens: int) -> None:
        self.max_inputs = max_inputs
        self.max_tokens = max_tokens
        self.callers: deque[Caller] = deque()
        self.live: deque[Caller] = deque()  # live callers with rows to pack
        self.rows = 0
        self.live_rows = 0
        self.tokens = 0
        self.first_at: float | None = None  # when the oldest unpacked row arrived
        self.packed_at = -math.inf  # when the last request was packed

    def __len__(self) -> int:
        return len(self.callers) + len(self.live)

    def add(self, caller: Caller, now: float) -> None:
        (self.live if caller.live else self.callers).append(caller)
        self.rows += len(caller.texts) - caller.cursor
        if caller.live:
            self.live_rows += len(caller.texts) - caller.cursor
        self.tokens += sum(caller.tokens[caller.cursor :])
        if self.first_at is None:
            self.first_at = now

    def full(self) -> bool:
        """Enough rows wait for a full request."""
        return self.rows >= self.max_inputs or self.tokens >= self.max_tokens

    def pack(self, now: float) -> Batch:
        """Take rows round-robin across callers until the request is full: live callers'
        rows alone while any wait, else bulk callers'."""
        batch = Batch()
        while self.live and self.live[0].dead:
            self.drop(self.live.popleft())
        if self.live:
            batch.live = True
            self._pack_from(self.live, batch)
        else:
            self._pack_from(self.callers, batch)
        self.packed_at = now
        if not self.callers and not self.live:
            self.first_at = None
        # else: leftovers keep their original arrival time, so they flush without lingering
        return batch

    def _pack_from(self, callers: deque[Caller], batch: Batch) -> None:
        positions: dict[str, int] = {}
        while callers and not self._stopped(batch):
            caller = callers.popleft()
            if caller.dead:
                self.drop(caller)
                continue
            taken = 0
            while caller.cursor < len(caller.texts) and taken < ROUND_ROBIN_QUANTUM:
                row = caller.cursor
                text, n = caller.texts[row], caller.tokens[row]
                pos = positions.get(text)
                if pos is None:
                    if batch.texts and (
                        len(batch.texts) >= self.max_inputs or batch.tokens + n > self.max_tokens
                    ):
                        batch.closed = True
                        break
                    pos = positions[text] = len(batch.texts)
                    batch.texts.append(text)
                    batch.tokens += n
                else:
                    batch.deduplicated += 1
                dst, src = batch.routes.setdefault(caller, ([], []))
                dst.append(row)
                src.append(pos)
                batch.rows += 1
                caller.cursor += 1
                taken += 1
                self.rows -= 1
                self.tokens -= n
                if caller.live:
                    self.live_rows -= 1
            if caller.cursor < len(caller.texts):
                # Not exhausted: back of the queue (round robin) or front if batch is full.
                if self._stopped(batch) and taken == 0:
                    callers.appendleft(caller)
                    break
                callers.append(caller)

    def take_all(self) -> list[Caller]:
        """Remove every waiting caller (the batcher is closing); the totals go to zero."""
        callers = list(self.live) + list(self.callers)
        self.callers.clear()
        self.live.clear()
        self.rows = self.tokens = self.live_rows = 0
        self.first_at = None
        return callers

    def drop(self, caller: Caller) -> None:
        """Forget the unpacked rows of a failed or cancelled caller."""
        rest = caller.tokens[caller.cursor :]
        self.rows -= len(rest)
        if caller.live:
            self.live_rows -= len(rest)
        self.tokens -= sum(rest)
        caller.cursor = len(caller.texts)

    def _stopped(self, batch: Batch) -> bool:
        return (
            batch.closed or len(batch.texts) >= self.max_inputs or batch.tokens >= self.max_tokens
        )
