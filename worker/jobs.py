"""arq job functions: the thin adapter between arq and the pipeline.

arq only receives security fixes now, so nothing below this module knows about it:
the pipeline gets a plain ``Delivery`` and signals retries with ``RetryLater``, which
is translated to ``arq.Retry`` here. Swapping the queue means rewriting this file and
``main.py`` only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog
from arq import Retry
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from worker import backfill, keys
from worker import reconcile as reconciler
from worker.pipeline import Delivery, Pipeline, RetryLater, is_transient
from worker.runtime import Runtime

log = structlog.get_logger("worker.jobs")


def _runtime(ctx: dict[str, Any]) -> Runtime:
    runtime: Runtime = ctx["runtime"]
    return runtime


async def ingest(ctx: dict[str, Any], payload: Any) -> dict[str, Any]:
    """Ingest one communication, transcript or media payload."""
    pipeline: Pipeline = _runtime(ctx).pipeline
    enqueue_time = ctx.get("enqueue_time")
    delivery = Delivery(
        arq_job_id=ctx.get("job_id"),
        job_try=int(ctx.get("job_try", 1)),
        enqueue_time_ms=int(enqueue_time.timestamp() * 1000) if enqueue_time else 0,
    )
    structlog.contextvars.bind_contextvars(arq_job_id=delivery.arq_job_id)
    # From now until its rows reach the embedding batcher, requests may wait for this job.
    arrived = pipeline.batcher.expect(bind=True)
    try:
        return await pipeline.run(payload, delivery)
    except RetryLater as exc:
        raise Retry(defer=exc.delay_s) from exc
    except Exception as exc:
        # The pipeline records every outcome it can; a transient error escaping it means
        # PostgreSQL (or the network) failed before anything could be recorded, e.g. while
        # the job was being received. Retry the delivery: arq would otherwise drop it as
        # failed and leave its ledger row queued until the reconciler's grace period ends.
        if not is_transient(exc):
            raise
        delay = pipeline.backoff(delivery.job_try)
        log.warning("job.transient_error", error=type(exc).__name__, delay_s=delay,
                    job_try=delivery.job_try)  # fmt: skip
        raise Retry(defer=delay) from exc
    finally:
        arrived()
        structlog.contextvars.unbind_contextvars("arq_job_id")


async def embed_pending(ctx: dict[str, Any]) -> dict[str, int]:
    """Embed contact profiles and insights that lack a current-model embedding."""
    rt = _runtime(ctx)
    started = time.perf_counter()
    done = await backfill.embed_pending(
        rt.pool, rt.batcher, rt.model, rt.settings.embed_pending_batch
    )
    log.info("embed_pending.done", seconds=round(time.perf_counter() - started, 3), **done)
    return done


async def maintenance(ctx: dict[str, Any]) -> dict[str, Any]:
    """Nightly ANALYZE / REINDEX / slow-query report (same code as the CLI)."""
    from worker.maintenance import run_maintenance

    rt = _runtime(ctx)
    report = await run_maintenance(rt.settings, rt.database_url, trigger="cron")
    return dict(report.to_dict())


async def reconcile(ctx: dict[str, Any]) -> dict[str, int]:
    """Re-enqueue ledger jobs that Redis lost (see ``worker.reconcile``)."""
    rt = _runtime(ctx)
    return await reconciler.reconcile(rt.settings, rt.pool, ctx["redis"])


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

    def __init__(self, redis: Redis, queue_name: str, max_jobs: int,
                 blocked: Callable[[], int] = lambda: 0) -> None:  # fmt: skip
        self._script = redis.register_script(_QUEUED_NOT_STARTED)
        self._queue = queue_name
        self._max_jobs = max_jobs
        self._blocked = blocked

    async def __call__(self) -> int:
        room = self._max_jobs - self._blocked()
        if room <= 0:
            return 0
        args: list[str | int] = [timestamp_ms(), keys.IN_PROGRESS_KEY_PREFIX, room,
                                 BACKLOG_SCAN_LIMIT]  # fmt: skip
        return int(await self._script(keys=[self._queue], args=args))


def watch_queue(ctx: dict[str, Any]) -> None:
    """Let the runtime's batcher see this worker's queue backlog (arq's Redis pool)."""
    rt = _runtime(ctx)
    redis: Redis | None = ctx.get("redis")
    if redis is None:  # not under arq (a test calling the hooks directly)
        return
    s, batcher = rt.settings, rt.batcher
    probe = QueueBacklog(redis, s.queue_name, s.worker_concurrency, lambda: batcher.unsent_callers)
    batcher.set_backlog(probe, recheck_s=s.worker_poll_delay_s)
