"""The reconciler: PostgreSQL is the record, Redis only the transport.

A ledger row that is ``queued`` or ``running`` but has no live arq job (no
``arq:job:<id>`` and no ``arq:in-progress:<id>`` key) was lost by the transport: the
worker running it died and its job expired, Redis restarted without its data or was
flushed, or a connector wrote the ledger and crashed before reaching Redis. Once such
a row has been untouched for ``reconcile_grace_s`` the reconciler enqueues its
``payload`` again under the same job id, appends a ``job.requeued`` event (no status
change) and touches the row, so the grace period starts over.

Racing a live worker is ruled out three ways:

* the row is locked (``FOR UPDATE`` on the exact ``updated_at`` we read) while Redis is
  checked and the job enqueued, so a worker cannot move the row meanwhile, and a row a
  worker moved since we read it is skipped;
* a worker marks the ledger ``done`` before arq deletes the job's keys, so a job whose
  keys are gone while its row is still queued/running is not being run by anyone;
* an in-progress key is only treated as orphaned (its worker died: arq keeps the key
  for its longest function timeout, a day here) once the row has been untouched for
  longer than ``job_timeout_s`` + grace, which no live run can be: arq cancels it;
* the re-enqueue uses the job's own id, so arq itself refuses it while a job with that
  id exists (a result arq kept for an unfinished row is stale and removed first); and a
  delivery of a job that was in fact finished is a recorded no-op in the pipeline.

A job that keeps losing its worker (a poison message that kills the process) would be
re-enqueued forever; once its attempts reach ``job_max_tries`` it is dead-lettered
(``job.failed``) instead.
"""

from __future__ import annotations

import json
import time

import asyncpg
import structlog
from arq.connections import ArqRedis

from worker.core.settings import Settings
from worker.db import ledger
from worker.queue import keys

log = structlog.get_logger("worker.queue.reconcile")


def _arq_ids(row: asyncpg.Record) -> list[str]:
    ids = [str(row["id"])]
    if row["arq_job_id"] and row["arq_job_id"] not in ids:
        ids.append(row["arq_job_id"])
    return ids


async def job_alive(redis: ArqRedis, arq_ids: list[str]) -> bool:
    """True while arq holds a queued/deferred job or a running one under any of the ids,
    or a worker still runs it after handing its arq slot back (``worker.queue.handoff``)."""
    prefixes = (keys.JOB_KEY_PREFIX, keys.IN_PROGRESS_KEY_PREFIX, keys.HANDED_OFF_KEY_PREFIX)
    names = [p + i for i in arq_ids for p in prefixes]
    return bool(await redis.exists(*names))


async def reconcile(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: ArqRedis,
    *,
    grace_s: float | None = None,
    limit: int = 1000,
) -> dict[str, int]:
    """One pass; returns counts (checked, alive, requeued, refused, dead_lettered, ...)."""
    started = time.perf_counter()
    grace = settings.reconcile_grace_s if grace_s is None else grace_s
    counts = dict.fromkeys(
        ("checked", "alive", "changed", "requeued", "refused", "dead_lettered", "unreplayable"),
        0,
    )
    async with pool.acquire() as conn:
        rows = await ledger.lost_candidates(conn, float(grace), limit)
    for row in rows:
        counts["checked"] += 1
        outcome = await _reconcile_one(settings, pool, redis, row)
        counts[outcome] += 1
    if counts["requeued"] or counts["dead_lettered"] or counts["unreplayable"]:
        log.info("reconcile.requeued", seconds=round(time.perf_counter() - started, 3), **counts)
    else:
        log.debug("reconcile.clean", **counts)
    return counts


async def _reconcile_one(
    settings: Settings, pool: asyncpg.Pool, redis: ArqRedis, row: asyncpg.Record
) -> str:
    arq_ids = _arq_ids(row)
    arq_id = row["arq_job_id"] or str(row["id"])
    if keys.is_page_job(arq_id):
        # An item of a page job: alive while the page is; if lost, it goes back alone.
        arq_id = str(row["id"])
    ref = ledger.JobRef(
        row["id"], row["workspace_id"], row["kind"], attempt=row["attempts"], arq_job_id=arq_id
    )
    step = f"requeued:{row['updated_at'].isoformat()}"
    async with pool.acquire() as conn, conn.transaction():
        raw = await ledger.lock_unchanged(conn, row["id"], row["updated_at"])
        if raw is None:
            return "changed"  # a worker moved it (or another reconciler holds it)
        bound = log.bind(
            job_id=str(row["id"]),
            workspace_id=str(row["workspace_id"]),
            kind=row["kind"],
            status=row["status"],
            attempts=row["attempts"],
        )
        if await job_alive(redis, arq_ids):
            if not _run_is_over(settings, row):
                return "alive"
            # arq keeps a job's in-progress key for its longest function timeout (the
            # nightly maintenance's: a day), so the job of a worker that died (SIGKILL,
            # OOM, lost host) would wait that long. No run outlives job_timeout_s (arq
            # cancels it), so a row untouched for longer lost its worker: release the
            # job; arq re-runs it if it is still queued, else it is enqueued below.
            await redis.delete(
                *[
                    p + i
                    for i in arq_ids
                    for p in (keys.IN_PROGRESS_KEY_PREFIX, keys.HANDED_OFF_KEY_PREFIX)
                ]
            )
            if await job_alive(redis, arq_ids):
                await ledger.record_requeue(
                    conn, ref, step, row["status"], arq_id, "worker lost; job released"
                )
                bound.info("reconcile.job_released", arq_job_id=arq_id)
                return "requeued"
        if row["status"] == "running" and row["attempts"] >= settings.job_max_tries:
            reason = f"worker lost the job on its last attempt ({row['attempts']} attempts)"
            await ledger.finish(conn, ref, ledger.JOB_FAILED, error=reason)
            bound.error("reconcile.dead_lettered", reason=reason)
            return "dead_lettered"
        payload = raw["payload"]
        size = len(payload) if isinstance(payload, str) else 0
        if isinstance(payload, str):
            payload = json.loads(payload)
        if not isinstance(payload, dict):
            bound.warning("reconcile.unreplayable", reason="ledger row has no payload")
            return "unreplayable"
        if size > settings.inline_payload_max_bytes:  # as the client sends it: by reference
            payload = {keys.LEDGER_PAYLOAD: str(row["id"])}
        # No job and no run, but the row is unfinished: a result arq kept is from a run
        # that died without recording (job timeout, unexpected error) and would make arq
        # refuse the re-enqueue for keep_result seconds; a leftover try counter would make
        # arq give up on it at once ("max retries exceeded"). The ledger counts attempts.
        stale = [p + i for i in arq_ids for p in (keys.RESULT_KEY_PREFIX, keys.RETRY_KEY_PREFIX)]
        await redis.delete(*stale)
        job = await redis.enqueue_job(
            keys.INGEST, payload, _job_id=arq_id, _queue_name=settings.queue_name
        )
        if job is None:
            # arq still holds a job or a result with this id: nothing to recover now.
            return "refused"
        await ledger.record_requeue(conn, ref, step, row["status"], arq_id, "no live arq job")
        bound.info("reconcile.job_requeued", arq_job_id=arq_id)
        return "requeued"


def _run_is_over(settings: Settings, row: asyncpg.Record) -> bool:
    """The row has been untouched for longer than any run may last (arq's job timeout
    plus the grace): a run starts by marking the row running (which touches it), so an
    in-progress key older than that belongs to a dead worker, even if it died before
    the pipeline got to mark the row."""
    limit = settings.job_timeout_s + settings.reconcile_grace_s
    return (row["idle_s"] or 0.0) > limit
