"""The embedding batcher's view of this worker's queue: how many jobs are waiting.

Under bulk load a partial embedding request should linger for the jobs still in the
queue (they bring rows soon); at light load it should go at once. arq keeps no count of
jobs that are due and not started, so one Lua call counts them here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from arq.utils import timestamp_ms
from redis.asyncio import Redis

from worker.queue import keys
from worker.queue.runtime import Runtime


def _runtime(ctx: dict[str, Any]) -> Runtime:
    runtime: Runtime = ctx["runtime"]
    return runtime


# arq's queue is a sorted set of job ids scored by when each may run (ms); a job stays in
# it while it runs, marked by an in-progress key. Due (score <= ARGV[1]) and unmarked =
# waiting to start. Counts up to ARGV[3], looking at the first ARGV[4] due ids at most
# (running jobs are the oldest, so they come first). Retries deferred into the future
# have a future score and do not count.
_QUEUED_NOT_STARTED = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[4])
local want, n = tonumber(ARGV[3]), 0
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[2] .. id) == 0 then
    n = n + 1
    if n >= want then break end
  end
end
return n
"""
BACKLOG_SCAN_LIMIT = 4096


class QueueBacklog:
    """The batcher's backlog probe: jobs due in the queue that no worker has started.

    Counted up to the jobs this worker could still start soon: ``max_jobs`` minus
    ``blocked()``, the jobs whose rows wait in the batcher for a request. A running job
    that is chunking, writing or awaiting a request in flight frees its slot by itself;
    one whose rows are unsent does not, so when every slot is blocked that way, lingering
    for the queue would only stall (the probe then says 0 without asking Redis). One
    round trip, asked only while the batcher holds a partial request (at most once per
    poll interval).
    """

    def __init__(
        self, redis: Redis, queue_name: str, max_jobs: int, blocked: Callable[[], int] = lambda: 0
    ) -> None:
        self._script = redis.register_script(_QUEUED_NOT_STARTED)
        self._queue = queue_name
        self._max_jobs = max_jobs
        self._blocked = blocked

    async def __call__(self) -> int:
        room = self._max_jobs - self._blocked()
        if room <= 0:
            return 0
        args: list[str | int] = [
            timestamp_ms(),
            keys.IN_PROGRESS_KEY_PREFIX,
            room,
            BACKLOG_SCAN_LIMIT,
        ]
        return int(await self._script(keys=[self._queue], args=args))


def watch_queue(ctx: dict[str, Any]) -> None:
    """Let the runtime's batcher see this worker's queue backlog (arq's Redis pool)."""
    rt = _runtime(ctx)
    redis: Redis | None = ctx.get("redis")
    if redis is None:  # not under arq (a test calling the hooks directly)
        return
    s, batcher = rt.settings, rt.batcher
    handoffs = rt.handoffs

    def blocked() -> int:
        # Slots that cannot start another job until a request goes out. With handoffs,
        # only jobs kept for want of row budget hold one, and even they are not blocked
        # while handed-off rows are in flight or being stored (more rows than are unsent
        # here): those free budget by themselves, then the kept jobs are handed off.
        if not handoffs.enabled:
            return batcher.unsent_callers
        return 0 if handoffs.rows > batcher.unsent_rows else handoffs.waiting

    probe = QueueBacklog(redis, s.queue_name, s.worker_concurrency, blocked)
    batcher.set_backlog(probe, recheck_s=s.worker_poll_delay_s)
