"""arq job functions: the thin adapter between arq and the pipeline.

arq only receives security fixes now, so nothing below this module knows about it:
the pipeline gets a plain ``Delivery`` and signals retries with ``RetryLater``, which
is translated to ``arq.Retry`` here. Swapping the queue means rewriting this file and
``main.py`` only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog
from arq import Retry
from arq.connections import ArqRedis
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from worker import backfill, keys
from worker import reconcile as reconciler
from worker.delivery import Delivery, RetryLater, is_transient, pipeline_ledger_id
from worker.embedding.batcher import on_rows_queued
from worker.pipeline import Pipeline
from worker.queries import Q
from worker.runtime import Runtime

log = structlog.get_logger("worker.jobs")


def _runtime(ctx: dict[str, Any]) -> Runtime:
    runtime: Runtime = ctx["runtime"]
    return runtime


async def ingest(ctx: dict[str, Any], payload: Any) -> dict[str, Any]:
    """Ingest one communication, transcript or media payload.

    The run goes on in its own task; once its rows are queued for embedding (and the row
    budget admits them) the job is handed off: arq gets its slot back and sees the job
    as finished, while the run completes here (``worker.handoff``). A ``cos:handed-off``
    key tells the reconciler the job is alive meanwhile.
    """
    rt = _runtime(ctx)
    pipeline = rt.pipeline
    enqueue_time = ctx.get("enqueue_time")
    delivery = Delivery(
        arq_job_id=ctx.get("job_id"),
        job_try=int(ctx.get("job_try", 1)),
        enqueue_time_ms=int(enqueue_time.timestamp() * 1000) if enqueue_time else 0,
    )
    structlog.contextvars.bind_contextvars(arq_job_id=delivery.arq_job_id)
    # From now until its rows reach the embedding batcher, requests may wait for this job.
    arrived = pipeline.batcher.expect(bind=True)
    redis: ArqRedis | None = ctx.get("redis")
    offer = rt.handoffs.offer()
    if redis is not None and delivery.arq_job_id:  # (not when a test calls this directly)
        on_rows_queued(offer.rows_queued)  # seen by the run's task (it copies this context)
    run = asyncio.create_task(_run(pipeline, payload, delivery))
    try:
        if (redis is not None and await offer.wait(run)
                and await _hand_off(redis, rt, run, offer.rows, payload, delivery)):  # fmt: skip
            return {"status": "handed_off", "rows": offer.rows}
        return await run
    except RetryLater as exc:
        raise Retry(defer=exc.delay_s) from exc
    except asyncio.CancelledError:
        run.cancel()  # arq's job timeout or abort reaches the run too
        raise
    finally:
        on_rows_queued(None)
        arrived()
        structlog.contextvars.unbind_contextvars("arq_job_id")


async def _run(pipeline: Pipeline, payload: Any, delivery: Delivery) -> dict[str, Any]:
    try:
        return await pipeline.run(payload, delivery)
    except RetryLater:
        raise
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
        raise RetryLater(delay, type(exc).__name__) from exc


async def _hand_off(redis: ArqRedis, rt: Runtime, run: asyncio.Task[dict[str, Any]], rows: int,
                    payload: Any, delivery: Delivery) -> bool:  # fmt: skip
    """Adopt ``run`` (its rows are reserved) once the reconciler can see it is alive;
    False (rows given back, the job keeps its slot) if Redis cannot be told."""
    assert delivery.arq_job_id is not None
    job = delivery.arq_job_id
    marker = keys.HANDED_OFF_KEY_PREFIX + job
    running = keys.HANDED_OFF_SET_PREFIX + rt.settings.queue_name
    timeout_ms = int(rt.settings.job_timeout_s * 1000)
    try:
        now_ms = int(time.time() * 1000)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(marker, b"1", px=timeout_ms)
            pipe.zadd(running, {job: now_ms + timeout_ms})
            pipe.zremrangebyscore(running, "-inf", now_ms)  # entries of crashed workers
            await pipe.execute()
    except Exception as exc:  # noqa: BLE001 - the job just keeps its slot
        rt.handoffs.release(rows)
        log.warning("job.hand_off_skipped", error=type(exc).__name__)
        return False

    async def after(done: asyncio.Task[dict[str, Any]]) -> None:
        try:
            await _after_hand_off(redis, rt, done, payload, delivery)
        finally:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.delete(marker)
                pipe.zrem(running, job)
                await pipe.execute()

    rt.handoffs.adopt(run, rows, timeout_s=timeout_ms / 1000, after=after)
    return True


async def _after_hand_off(redis: ArqRedis, rt: Runtime, run: asyncio.Task[dict[str, Any]],
                          payload: Any, delivery: Delivery) -> None:  # fmt: skip
    """What arq would have done with the outcome of a run it no longer watches."""
    bound = log.bind(arq_job_id=delivery.arq_job_id, job_try=delivery.job_try)
    if run.cancelled():
        # Timed out or stopped at shutdown: the ledger row stays running; the reconciler
        # re-enqueues it once the marker is gone and the grace period has passed.
        bound.warning("job.handed_off_cancelled")
        return
    exc = run.exception()
    if exc is None:
        return
    if not isinstance(exc, RetryLater):
        bound.error("job.handed_off_failed", error=type(exc).__name__)
        return
    # arq keeps the finished job's id (its result) for keep_result: a retry needs its own.
    assert delivery.arq_job_id is not None
    retry_id = f"{delivery.arq_job_id.split('~')[0]}~{delivery.job_try + 1}"
    await redis.enqueue_job(keys.INGEST, payload, _job_id=retry_id, _defer_by=exc.delay_s,
                            _job_try=delivery.job_try + 1,
                            _queue_name=rt.settings.queue_name)  # fmt: skip
    # The ledger row names the job it is waiting for, so the reconciler finds it alive.
    ledger_id = pipeline_ledger_id(payload, delivery)
    async with rt.pool.acquire() as conn:
        await conn.execute(Q.ledger_set_arq_job_id, ledger_id, retry_id)
    bound.info("job.handed_off_retry", retry_arq_job_id=retry_id, delay_s=exc.delay_s)


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
