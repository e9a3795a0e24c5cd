"""arq job functions: the thin adapter between arq and the pipeline.

arq only receives security fixes now, so nothing below this module knows about it:
the pipeline gets a plain ``Delivery`` and signals retries with ``RetryLater``, which
is translated to ``arq.Retry`` here. Swapping the queue means rewriting this file and
``main.py`` only.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from arq import Retry

from worker import backfill
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
