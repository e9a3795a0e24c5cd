"""The arq worker's configuration: job functions, cron, hooks, serializers.

Startup opens the ``Runtime`` (asyncpg pool with the pgvector codec, embedding
provider and the shared batcher); shutdown closes it. ``worker.main`` turns these
options into the ``WorkerSettings`` class arq loads; the demo and tests build an
``arq.worker.Worker`` from the same options.
"""

from __future__ import annotations

import asyncio
from typing import Any

from arq import cron
from arq.worker import Worker

from worker.core.allocator import set_mmap_threshold
from worker.core.log import configure_logging
from worker.core.settings import Settings, get_settings
from worker.queue import backlog, fleet, jobs, keys, serialization
from worker.queue.lanes import LiveLaneWorker
from worker.queue.runtime import Runtime
from worker.servers.services import Services


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.get("settings") or get_settings()
    configure_logging(settings)
    set_mmap_threshold(settings.malloc_mmap_threshold_bytes)
    services = ctx.get("services") or Services(settings)
    runtime = ctx["runtime"] = await Runtime.open(settings, services)
    # Jobs still waiting in the queue are on their way to the batcher too.
    backlog.watch_queue(ctx)
    redis = ctx.get("redis")
    if redis is not None:  # this worker's record for cos-worker status (worker.queue.fleet)
        ctx["fleet_record"] = asyncio.create_task(
            fleet.heartbeat(
                redis, settings.queue_name, settings.worker_health_check_s, runtime.report
            )
        )


async def shutdown(ctx: dict[str, Any]) -> None:
    record: asyncio.Task[None] | None = ctx.pop("fleet_record", None)
    if record is not None:
        record.cancel()
        await asyncio.gather(record, return_exceptions=True)
    runtime: Runtime | None = ctx.get("runtime")
    if runtime is not None:
        await runtime.close()


def _cron_jobs(settings: Settings) -> list[Any]:
    """The nightly maintenance and the reconciler (not on the live lane)."""
    return [
        cron(
            jobs.maintenance,
            hour={settings.maintenance_hour},
            minute={settings.maintenance_minute},
            run_at_startup=False,
            unique=True,
            timeout=24 * 3600,
        ),
        # Redis is the transport, the ledger the record: re-enqueue what Redis lost.
        cron(
            jobs.reconcile,
            name=keys.RECONCILE,
            minute=set(range(0, 60, settings.reconcile_every_minutes)),
            run_at_startup=False,
            unique=True,
            timeout=600,
        ),
    ]


def worker_options(settings: Settings) -> dict[str, Any]:
    """Everything arq needs except redis settings; shared by WorkerSettings and tests."""
    live_lane = settings.worker_lane == "live"
    name = fleet.worker_name(settings.worker_name) + (":live" if live_lane else "")
    return {
        "functions": [jobs.ingest, jobs.ingest_page, jobs.embed_pending],
        "cron_jobs": [] if live_lane else _cron_jobs(settings),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "queue_name": settings.queue_name,
        "max_jobs": settings.worker_concurrency,
        "poll_delay": settings.worker_poll_delay_s,
        "job_timeout": settings.job_timeout_s,
        # Our pipeline decides retries itself and dead-letters at job_max_tries; arq's
        # cap only guards against a job that crashes the process over and over.
        "max_tries": settings.job_max_tries + 2,
        "keep_result": 3600,
        # One key per worker (arq's default is one per queue): cos-worker status counts them.
        "health_check_interval": settings.worker_health_check_s,
        "health_check_key": fleet.health_check_key(settings.queue_name, name),
        "job_serializer": serialization.dumps,
        "job_deserializer": serialization.loads,
    }


def worker_class(settings: Settings) -> type[Worker]:
    """arq's Worker, or the live lane's (``WORKER_LANE=live``: ``worker.queue.lanes``)."""
    return LiveLaneWorker if settings.worker_lane == "live" else Worker


async def run_bursts(
    settings: Settings, ctx: dict[str, Any], *, max_bursts: int = 20, **worker_kw: Any
) -> Worker:
    """Run in-process arq workers in burst mode until the queue stays empty (the demo and
    the tests). More than one burst when a handed-off job failed transiently: its retry
    is enqueued while the first burst shuts down (``worker.queue.handoff``). Returns the first
    worker (its counters cover everything but such retries)."""
    from worker.queue.client import connect, redis_settings_for

    first: Worker | None = None
    for _ in range(max_bursts):
        worker = Worker(
            **worker_options(settings),
            redis_settings=redis_settings_for(settings.redis_url or ""),
            burst=True,
            handle_signals=False,
            ctx=dict(ctx),
            **worker_kw,
        )
        try:
            await worker.main()
        finally:
            await worker.close()  # shutdown drains handed-off jobs: retries are queued now
        first = first or worker
        redis = await connect(settings.redis_url or "")
        try:
            if not await redis.zcard(settings.queue_name):
                break
        finally:
            await redis.aclose()
    assert first is not None
    return first
