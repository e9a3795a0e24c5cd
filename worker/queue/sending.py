"""Putting a connector's jobs on arq's queue: many jobs in one Redis call.

arq's own ``enqueue_job`` is a WATCH/MULTI transaction per job (three round trips); a
connector page is hundreds of jobs. The script below does what arq does for each of them,
with each job's own score (a live job goes ahead: ``worker.core.priority``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from arq.constants import expires_extra_ms
from arq.jobs import serialize_job
from arq.utils import timestamp_ms

from worker.core.priority import queue_score
from worker.queue import keys, serialization

# arq's enqueue (a WATCH/MULTI transaction per job: three round trips) for a whole page in
# one call: a job whose key or kept result still exists is refused, as arq refuses it.
# A job whose ledger row this call created ("fresh") cannot have a live result: one left
# by an earlier life of the row (an item deleted, then sent again with the same content:
# the deletion removed the row) is dropped, or arq would refuse the job for keep_result.
# KEYS: the queue, then (job key, result key) per job; ARGV: expiry ms, then
# (job id, serialized job, fresh 1/0, score) per job (a live job's score is earlier:
# worker.core.priority).
_ENQUEUE_PAGE = """
local n = 0
for j = 1, (#KEYS - 1) / 2 do
  local job_key, result_key = KEYS[2 * j], KEYS[2 * j + 1]
  local a = 4 * (j - 1) + 1
  if ARGV[a + 3] == '1' then
    redis.call('DEL', result_key)
  end
  if redis.call('EXISTS', job_key, result_key) == 0 then
    redis.call('PSETEX', job_key, ARGV[1], ARGV[a + 2])
    redis.call('ZADD', KEYS[1], ARGV[a + 4], ARGV[a + 1])
    n = n + 1
  end
end
return n
"""


@dataclass(frozen=True)
class Send:
    """One arq job to enqueue: an item (``ingest``) or a page of new items (``ingest_page``)."""

    arq_id: str
    function: str
    arg: Any
    fresh: bool = False  # its ledger row was created by this call (see _ENQUEUE_PAGE)
    live: bool = False  # scored ahead of bulk jobs (worker.core.priority)


async def send(redis: ArqRedis, jobs: list[Send], queue: str) -> None:
    """Put ``jobs`` on ``queue`` in one Redis call (``_ENQUEUE_PAGE``)."""
    if not jobs:
        return
    now = timestamp_ms()
    keys_: list[str] = [queue]
    args: list[Any] = [expires_extra_ms]
    for j in jobs:
        keys_ += [keys.JOB_KEY_PREFIX + j.arq_id, keys.RESULT_KEY_PREFIX + j.arq_id]
        args += [
            j.arq_id,
            serialize_job(j.function, (j.arg,), {}, None, now, serializer=serialization.dumps),
            "1" if j.fresh else "0",
            queue_score(now, j.live),
        ]
    await redis.register_script(_ENQUEUE_PAGE)(keys=keys_, args=args)  # EVALSHA
