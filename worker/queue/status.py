"""What Redis knows of a queue (``cos-worker status``, the client, the tests)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from arq.connections import ArqRedis

from worker.queue import keys

# arq keeps a running job in its queue with an in-progress key: depth and running, for
# this queue only (other queues on the same Redis are not counted).
_QUEUE_STATUS = """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local running = 0
for _, id in ipairs(ids) do
  running = running + redis.call('EXISTS', ARGV[1] .. id)
end
return {#ids, running, redis.call('ZCOUNT', KEYS[2], ARGV[2], '+inf')}
"""


@dataclass(frozen=True)
class QueueStatus:
    """What Redis knows of a queue: its jobs, and how many of them are being worked on."""

    depth: int  # jobs in the queue (waiting, deferred or started by arq)
    running: int  # of those, started and holding an arq slot
    handed_off: int  # jobs that gave their slot back and still run in a worker (handoff)


async def queue_status(redis: ArqRedis, queue_name: str) -> QueueStatus:
    """The queue's depth, running and handed-off jobs: one round trip."""
    depth, running, handed_off = await redis.register_script(_QUEUE_STATUS)(
        keys=[queue_name, keys.HANDED_OFF_SET_PREFIX + queue_name],
        args=[keys.IN_PROGRESS_KEY_PREFIX, int(time.time() * 1000)],
    )
    return QueueStatus(int(depth), int(running), int(handed_off))
