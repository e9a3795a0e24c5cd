"""arq job functions: the thin adapter between arq and the pipeline.

arq only receives security fixes now, so nothing below this module knows about it:
the pipeline gets a plain ``Delivery`` and signals retries with ``RetryLater``, which
is translated to ``arq.Retry`` here. Swapping the queue means rewriting ``worker/queue/``
only.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import replace
from typing import Any

import structlog
from arq import Retry
from arq.connections import ArqRedis

from worker.core.priority import is_live_score
from worker.db import backfill, ledger
from worker.db.pool import LIVE_CONNECTIONS
from worker.ingest.delivery import Delivery, RetryLater, is_transient, pipeline_ledger_id
from worker.ingest.pipeline import Pipeline
from worker.queue import keys
from worker.queue import reconcile as reconciler
from worker.queue.handoff import Offer
from worker.queue.runtime import Runtime
from worker.queue.serialization import QuietPayload

log = structlog.get_logger("worker.queue.jobs")


def _runtime(ctx: dict[str, Any]) -> Runtime:
    runtime: Runtime = ctx["runtime"]
    return runtime


async def ingest(ctx: dict[str, Any], payload: Any) -> dict[str, Any]:
    """Ingest one communication, transcript or media payload.

    The run goes on in its own task; once its rows are queued for embedding (and the row
    budget admits them) the job is handed off: arq gets its slot back and sees the job
    as finished, while the run completes here (``worker.queue.handoff``). A ``cos:handed-off``
    key tells the reconciler the job is alive meanwhile.
    """
    rt = _runtime(ctx)
    redis: ArqRedis | None = ctx.get("redis")
    offer = rt.handoffs.offer()
    handing_off = redis is not None and bool(ctx.get("job_id"))  # (not a test's direct call)
    # From now until its rows reach the embedding batcher, requests may wait for this job.
    delivery = replace(
        _delivery(ctx),
        arrival=rt.batcher.expect(),
        rows_queued=offer.rows_queued if handing_off else None,
    )
    structlog.contextvars.bind_contextvars(arq_job_id=delivery.arq_job_id)
    run = asyncio.create_task(_run(rt, payload, delivery))
    try:
        if (
            redis is not None
            and await offer.wait(run)
            and await _hand_off(redis, rt, run, offer.rows, payload, delivery)
        ):
            return {"status": "handed_off", "rows": offer.rows}
        return await run
    except RetryLater as exc:
        raise Retry(defer=exc.delay_s) from exc
    except asyncio.CancelledError:
        run.cancel()  # arq's job timeout or abort reaches the run too
        raise
    finally:
        if delivery.arrival is not None:
            delivery.arrival()
        structlog.contextvars.unbind_contextvars("arq_job_id")


def _delivery(ctx: dict[str, Any]) -> Delivery:
    enqueue_time = ctx.get("enqueue_time")
    enqueue_time_ms = int(enqueue_time.timestamp() * 1000) if enqueue_time else 0
    return Delivery(
        arq_job_id=ctx.get("job_id"),
        job_try=int(ctx.get("job_try", 1)),
        enqueue_time_ms=enqueue_time_ms,
        live=is_live_score(ctx.get("score"), enqueue_time_ms),
    )


async def ingest_page(ctx: dict[str, Any], page: Any) -> dict[str, Any]:
    """Ingest the items of one connector page (``client.enqueue_many`` sends the items
    its ledger transaction created as one job): all at once, each as ``ingest`` runs
    one job, so their ledger pickups share a transaction (``worker.ingest.pickup``) and arq's
    per-job round trips are paid once per page.

    An item's outcome is its own: a failure is recorded for that item, a transient one is
    retried as a job of its own (``<item job id>~<try>``), and the page job succeeds.
    Once every item has finished or queued its rows (and the row budget admits them),
    the page is handed off as one job would be.
    """
    rt = _runtime(ctx)
    items = page.get("items") if isinstance(page, dict) else None
    delivery = _delivery(ctx)
    if not isinstance(items, list) or not items:
        # Only a hand-made job looks like this: recorded as one invalid payload.
        return await rt.pipeline.reject(
            page, delivery, "items", "a page job needs a non-empty list of items"
        )
    delivery = replace(delivery, in_page=True)
    structlog.contextvars.bind_contextvars(arq_job_id=delivery.arq_job_id)
    rt.batcher.note_bulk()  # the items are on their way; the queue may look empty already
    payloads = [QuietPayload(i) if isinstance(i, dict) else i for i in items]
    await rt.admission.take(len(payloads))  # room among the pages' items in flight
    offers = [rt.handoffs.offer() for _ in payloads]
    runs = [_start_item(rt, p, delivery, o) for p, o in zip(payloads, offers, strict=True)]
    for run in runs:
        run.add_done_callback(lambda _: rt.admission.give())
    redis: ArqRedis | None = ctx.get("redis")
    try:
        if redis is None or not delivery.arq_job_id:  # a test calling this directly
            await asyncio.wait(runs)
            return _page_result(runs, handed_off=0)
        reserved = await asyncio.gather(*(o.wait(r) for o, r in zip(offers, runs, strict=True)))
        rows = {i: o.rows for i, (o, ok) in enumerate(zip(offers, reserved, strict=True)) if ok}
        adopted = bool(rows) and await _mark_handed_off(redis, rt, delivery.arq_job_id)
        if rows and not adopted:
            rt.handoffs.release(sum(rows.values()))
            rows = {}
            await asyncio.wait(runs)
        await _settle_page(redis, rt, runs, payloads, rows, delivery)
        return _page_result(runs, handed_off=len(rows))
    except asyncio.CancelledError:
        for run in runs:
            run.cancel()  # arq's job timeout or abort reaches the items too
        raise
    finally:
        structlog.contextvars.unbind_contextvars("arq_job_id")


def _start_item(
    rt: Runtime, payload: Any, delivery: Delivery, offer: Offer
) -> asyncio.Task[dict[str, Any]]:
    """One item's run, with its own announcement to the batcher and its own hand-off hook
    (what ``ingest`` gives a whole job)."""
    arrival = rt.batcher.expect()
    item = replace(delivery, arrival=arrival, rows_queued=offer.rows_queued)
    run = asyncio.create_task(_run(rt, payload, item))
    run.add_done_callback(lambda _: arrival())
    return run


async def _settle_page(
    redis: ArqRedis,
    rt: Runtime,
    runs: list[asyncio.Task[dict[str, Any]]],
    payloads: list[Any],
    reserved: dict[int, int],
    delivery: Delivery,
) -> None:
    """Settle the finished items now; adopt the reserved ones (their rows are queued),
    and take the page's hand-off marker down when the last of them ends."""
    left = len(reserved)

    async def after(done: asyncio.Task[dict[str, Any]], payload: Any) -> None:
        nonlocal left
        try:
            await _settle(redis, rt, done, payload, delivery)
        finally:
            left -= 1
            if left == 0:
                assert delivery.arq_job_id is not None
                await _unmark_handed_off(redis, rt, delivery.arq_job_id)

    for i, (run, payload) in enumerate(zip(runs, payloads, strict=True)):
        if i in reserved:
            rt.handoffs.adopt(
                run,
                reserved[i],
                timeout_s=rt.settings.job_timeout_s,
                after=functools.partial(after, payload=payload),
            )
        else:
            await _settle(redis, rt, run, payload, delivery)


def _page_result(runs: list[asyncio.Task[dict[str, Any]]], handed_off: int) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for run in runs:
        if not run.done():
            continue
        status = (
            "cancelled"
            if run.cancelled()
            else "retrying"
            if isinstance(run.exception(), RetryLater)
            else "error"
            if run.exception() is not None
            else str(run.result().get("status"))
        )
        counts[status] = counts.get(status, 0) + 1
    return {"status": "page", "items": len(runs), "handed_off": handed_off, **counts}


async def _run(rt: Runtime, payload: Any, delivery: Delivery) -> dict[str, Any]:
    """One item's run, counted in flight and measured (``cos-worker status``, metrics)."""
    if delivery.live:
        LIVE_CONNECTIONS.set(True)  # this run's task only: its connections are kept ones
    rt.activity.in_flight += 1
    outcome = "error"
    try:
        result = await _run_pipeline(rt.pipeline, payload, delivery)
        outcome = str(result.get("status", "done"))
        return result
    except RetryLater:
        outcome = "retry"
        raise
    finally:
        rt.activity.in_flight -= 1
        if rt.metrics.enabled:
            since = delivery.enqueue_time_ms
            latency = time.time() - since / 1000 if since else None
            rt.metrics.item(outcome, latency, delivery.live)


async def _run_pipeline(pipeline: Pipeline, payload: Any, delivery: Delivery) -> dict[str, Any]:
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
        log.warning(
            "job.transient_error", error=type(exc).__name__, delay_s=delay, job_try=delivery.job_try
        )
        raise RetryLater(delay, type(exc).__name__) from exc


async def _mark_handed_off(redis: ArqRedis, rt: Runtime, job: str) -> bool:
    """Tell the reconciler (and ``cos-worker status``) that ``job`` runs on without its arq
    slot; False if Redis cannot be told (the job then keeps its slot)."""
    timeout_ms = int(rt.settings.job_timeout_s * 1000)
    running = keys.HANDED_OFF_SET_PREFIX + rt.settings.queue_name
    try:
        now_ms = int(time.time() * 1000)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.HANDED_OFF_KEY_PREFIX + job, b"1", px=timeout_ms)
            pipe.zadd(running, {job: now_ms + timeout_ms})
            pipe.zremrangebyscore(running, "-inf", now_ms)  # entries of crashed workers
            await pipe.execute()
    except Exception as exc:  # noqa: BLE001 - the job just keeps its slot
        log.warning("job.hand_off_skipped", error=type(exc).__name__)
        return False
    return True


async def _unmark_handed_off(redis: ArqRedis, rt: Runtime, job: str) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(keys.HANDED_OFF_KEY_PREFIX + job)
        pipe.zrem(keys.HANDED_OFF_SET_PREFIX + rt.settings.queue_name, job)
        await pipe.execute()


async def _hand_off(
    redis: ArqRedis,
    rt: Runtime,
    run: asyncio.Task[dict[str, Any]],
    rows: int,
    payload: Any,
    delivery: Delivery,
) -> bool:
    """Adopt ``run`` (its rows are reserved) once the reconciler can see it is alive;
    False (rows given back, the job keeps its slot) if Redis cannot be told."""
    assert delivery.arq_job_id is not None
    job = delivery.arq_job_id
    if not await _mark_handed_off(redis, rt, job):
        rt.handoffs.release(rows)
        return False

    async def after(done: asyncio.Task[dict[str, Any]]) -> None:
        try:
            await _settle(redis, rt, done, payload, delivery, retry_base=job.split("~")[0])
        finally:
            await _unmark_handed_off(redis, rt, job)

    rt.handoffs.adopt(run, rows, timeout_s=rt.settings.job_timeout_s, after=after)
    return True


async def _settle(
    redis: ArqRedis,
    rt: Runtime,
    run: asyncio.Task[dict[str, Any]],
    payload: Any,
    delivery: Delivery,
    *,
    retry_base: str | None = None,
) -> None:
    """What arq would have done with the outcome of a run it does not watch (handed off,
    or an item of a page job): log a failure; enqueue a retry as a job of its own, under
    ``<retry_base>~<try>`` (arq keeps a finished job's id for keep_result; the base is
    the item's ledger id unless given)."""
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
    ledger_id = pipeline_ledger_id(payload, delivery)
    retry_id = f"{retry_base or ledger_id}~{delivery.job_try + 1}"
    await redis.enqueue_job(
        keys.INGEST,
        payload,
        _job_id=retry_id,
        _defer_by=exc.delay_s,
        _job_try=delivery.job_try + 1,
        _queue_name=rt.settings.queue_name,
    )
    # The ledger row names the job it is waiting for, so the reconciler finds it alive.
    async with rt.pool.acquire() as conn:
        await ledger.name_retry_job(conn, ledger_id, retry_id)
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
    """Re-enqueue ledger jobs that Redis lost (see ``worker.queue.reconcile``)."""
    rt = _runtime(ctx)
    return await reconciler.reconcile(rt.settings, rt.pool, ctx["redis"])
