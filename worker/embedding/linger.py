"""When a partial embedding request should wait for more rows, and when it should go.

Why: a request that goes out half full costs a second request later (and its fixed
latency); one that waits for rows nobody is about to send only adds latency. So the
dispatcher lingers only while more rows are *on the way*, which it learns from two
signals kept here:

* announcements: a job calls ``expect()`` when it starts and the returned handle when its
  rows are queued (or when it ends up embedding nothing);
* a backlog probe (``set_backlog``): how many queued jobs could still start in this
  process and bring rows soon.

With neither signal in use the policy is a plain linger of ``linger_s`` from the oldest
pending row.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable

import structlog

from worker.embedding.packing import PendingRows

log = structlog.get_logger(__name__)

# A backlog probe slower than this is unanswered: the last answer stands. (Under bulk load
# the event loop can be busy for that long; reading the silence as "no backlog" sent a
# request out 42k tokens full in the middle of a bulk run.) The linger caps still bound
# how long a request waits, so a broken probe delays requests, never stops them.
BACKLOG_PROBE_TIMEOUT_S = 0.5
# A failing probe is logged at most this often.
BACKLOG_PROBE_WARN_EVERY_S = 60.0

BacklogProbe = Callable[[], Awaitable[int]]


class Linger:
    """The linger policy and the signals it reads (announcements, backlog probe)."""

    def __init__(self, linger_s: float, max_linger_s: float, wakeup: asyncio.Event) -> None:
        self.linger_s = linger_s
        self.max_linger_s = max(linger_s, max_linger_s)
        self._wakeup = wakeup  # set whenever rows arrive or an announced caller settles
        # Callers announced by ``expect()``; once used (or a backlog probe is set), lingering
        # only happens while more rows are on the way (a lone job at low load is sent at
        # once, without linger).
        self.upcoming = 0
        self.adaptive = False
        self._probe: BacklogProbe | None = None
        self._recheck_s = 0.02
        self._backlog = 0  # the probe's last answer ...
        self._backlog_at = -math.inf  # ... and when it was asked (monotonic)
        # Bulk load: set when the probe reports a backlog, cleared once a request goes out
        # with nobody on the way (the bulk is over, light-load behaviour again).
        self.busy = False
        self._probe_warned_at = -math.inf

    def set_backlog(self, probe: BacklogProbe | None, *, recheck_s: float = 0.02) -> None:
        """See ``EmbeddingBatcher.set_backlog``."""
        self._probe = probe
        self._recheck_s = max(0.001, recheck_s)
        self._backlog, self._backlog_at = 0, -math.inf
        if probe is not None:
            self.adaptive = True

    def note_bulk(self) -> None:
        """See ``EmbeddingBatcher.note_bulk``."""
        self.adaptive = True
        self.busy = True

    def expect(self) -> Callable[[], None]:
        """See ``EmbeddingBatcher.expect``."""
        self.adaptive = True
        self.upcoming += 1
        pending = True

        def arrived() -> None:
            nonlocal pending
            if pending:
                pending = False
                self.upcoming -= 1
                self._wakeup.set()

        return arrived

    async def wait(self, pending: PendingRows, closed: Callable[[], bool]) -> None:
        """Wait for more rows unless a full request is already waiting.

        Without announcements or a backlog probe: up to ``linger_s`` from the oldest
        pending row. Otherwise only while more rows are on the way: an announced caller
        that has not queued its rows yet, or a backlog reported by the probe. The cap is
        ``linger_s`` at light load and ``max_linger_s`` under bulk load (from when the
        probe reports a backlog until a request finds nobody on the way), counted from the
        oldest pending row or, under bulk load, from when the previous request was packed.
        Nobody on the way: no linger at light load; under bulk load one more look after
        ``recheck_s`` first, for a job the queue has handed over but that has not
        announced itself yet.
        """
        first = pending.first_at or time.monotonic()
        settled = False
        # Live rows never linger: their request goes now (``packing``: on its own).
        while not pending.full() and not pending.live_rows and not closed():
            now = time.monotonic()
            started = first
            if not self.adaptive:
                cap, wait = self.linger_s, math.inf
            else:
                backlog = await self._probe_backlog(now)
                cap = self.max_linger_s if self.busy else self.linger_s
                if self.busy:  # a full request's leftovers must not force the next one out
                    started = max(first, pending.packed_at)
                wait = math.inf
                if self.upcoming <= 0:
                    if backlog <= 0:
                        if settled or not self.busy:
                            self.busy = False
                            return  # nobody else is on the way: lingering only adds latency
                        settled = True
                    # Queued jobs announce themselves only once started: look again soon.
                    wait = self._recheck_s
            left = started + cap - now
            if left <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), min(left, wait))

    async def _probe_backlog(self, now: float) -> int:
        """The probe's answer, asked at most once per ``recheck_s`` (0 without a probe)."""
        probe = self._probe
        if probe is None:
            return 0
        if now - self._backlog_at >= self._recheck_s:
            try:
                self._backlog = int(await asyncio.wait_for(probe(), BACKLOG_PROBE_TIMEOUT_S))
            except Exception as exc:  # noqa: BLE001 - a broken probe must not stop embedding
                # Keep the last answer: no answer is not "no backlog" (see above).
                if now - self._probe_warned_at >= BACKLOG_PROBE_WARN_EVERY_S:
                    self._probe_warned_at = now
                    log.warning(
                        "embedding.backlog_probe_failed",
                        error_type=type(exc).__name__,
                        error=str(exc)[:200],
                    )
            self._backlog_at = now
            if self._backlog > 0:
                self.busy = True
        return self._backlog
