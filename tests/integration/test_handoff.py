"""Handing a job's arq slot back once its rows are queued for embedding (worker.queue.handoff),
with the real arq Worker, Redis, PostgreSQL and the OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.support.harness import (
    communication,
    db_fetch,
    db_val,
    new_workspace,
    run_worker_burst,
)
from worker import client
from worker.queue import keys
from worker.queue.reconcile import job_alive


async def _enqueue(settings: Any, payloads: list[dict[str, Any]]) -> list[str | Any]:
    redis = await client.connect(settings.redis_url)
    try:
        return await client.enqueue_many(redis, payloads, settings=settings)
    finally:
        await redis.aclose()


async def _done(dsn: str, ws: Any) -> int:
    return int(
        await db_val(
            dsn,
            "SELECT count(*) FROM ops.ingestion_jobs WHERE workspace_id = $1 AND status = 'done'",
            ws,
        )
    )


@pytest.mark.parametrize("handoff_rows", [0, 8192])
async def test_handed_off_jobs_let_few_slots_fill_one_request(
    settings_factory, migrated_dsn, fake_openai, handoff_rows: int
) -> None:
    """4 slots, 40 queued emails, requests may linger for the queue: jobs that keep their
    slots can only put 4 emails in a request; handed-off ones free their slots and the
    request takes (nearly) all 40."""
    settings = settings_factory(
        worker_concurrency=4,
        embed_batch_linger_ms=0,
        embed_batch_max_linger_ms=30_000,
        handoff_max_rows=handoff_rows,
    )
    ws = await new_workspace(migrated_dsn)
    await _enqueue(
        settings,
        [
            communication(ws, f"h{i}", f"handoff note {i}: ship item {i * 7}", thread_key=f"h{i}")
            for i in range(40)
        ],
    )
    await run_worker_burst(settings)
    assert await _done(migrated_dsn, ws) == 40
    stats = fake_openai.stats()
    assert stats["inputs"] == 40
    if handoff_rows:
        assert stats["count"] <= 2, stats["count"]  # a 2nd only on a very busy machine
    else:
        assert stats["count"] >= 10, stats["count"]  # 4 slots: at most 4 emails each


async def test_row_budget_bounds_handed_off_jobs(
    settings_factory, migrated_dsn, redis_server, fake_openai
) -> None:
    """With a budget of 3 rows (one email is one row) never more than 3 jobs are handed
    off at once: the others keep their slots until handed-off jobs finish."""
    fake_openai.configure(latency_ms=150)
    settings = settings_factory(
        worker_concurrency=8,
        handoff_max_rows=3,
        embed_batch_linger_ms=0,
        embed_batch_max_linger_ms=0,
    )
    ws = await new_workspace(migrated_dsn)
    ids = await _enqueue(
        settings,
        [communication(ws, f"b{i}", f"budget note {i}", thread_key=f"b{i}") for i in range(24)],
    )
    markers = {keys.HANDED_OFF_KEY_PREFIX + str(i) for i in ids}
    peak, stop = 0, asyncio.Event()
    reported: list[int] = []  # what `cos-worker status` would have said meanwhile

    async def sample() -> None:
        nonlocal peak
        redis = await client.connect(redis_server.url)
        try:
            while not stop.is_set():
                # EXISTS counts each existing key once (SCAN may repeat keys)
                peak = max(peak, await redis.exists(*markers))
                reported.append((await client.queue_status(redis, settings.queue_name)).handed_off)
                await asyncio.sleep(0.005)
        finally:
            await redis.aclose()

    sampler = asyncio.create_task(sample())
    try:
        await run_worker_burst(settings)
    finally:
        stop.set()
        await sampler
    assert await _done(migrated_dsn, ws) == 24
    assert 1 <= peak <= 3, peak
    assert 1 <= max(reported) <= 3, max(reported)
    redis = await client.connect(redis_server.url)
    try:  # every marker is gone with its job, and status counts none
        assert await redis.exists(*markers) == 0
        assert (await client.queue_status(redis, settings.queue_name)).handed_off == 0
        assert await redis.zcard(keys.HANDED_OFF_SET_PREFIX + settings.queue_name) == 0
    finally:
        await redis.aclose()


async def test_status_does_not_count_handed_off_entries_past_their_deadline(redis_server) -> None:
    """A worker that died mid-run leaves its entry; it stops counting when its marker would
    have expired (and the next handoff prunes it)."""
    queue = "status-test"
    redis = await client.connect(redis_server.url)
    try:
        now_ms = int(time.time() * 1000)
        await redis.zadd(
            keys.HANDED_OFF_SET_PREFIX + queue, {"crashed": now_ms - 1000, "alive": now_ms + 60_000}
        )
        status = await client.queue_status(redis, queue)
        assert (status.depth, status.running, status.handed_off) == (0, 0, 1)
    finally:
        await redis.delete(keys.HANDED_OFF_SET_PREFIX + queue)
        await redis.aclose()


async def test_a_handed_off_job_that_fails_transiently_is_retried_under_a_new_arq_id(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    """arq saw the job finish when it was handed off, so the retry is a new arq job
    (``<id>~2``), which the ledger row names (the reconciler looks for that one)."""
    settings = settings_factory(embed_max_retries=0, job_max_tries=3, retry_base_delay_s=0.05)
    ws = await new_workspace(migrated_dsn)
    fake_openai.push_faults({"status": 500})
    [jid] = await _enqueue(settings, [communication(ws, "r1", "Retry me after a 500.")])
    await run_worker_burst(settings)
    [row] = await db_fetch(
        migrated_dsn,
        "SELECT status::text, attempts, arq_job_id FROM ops.ingestion_jobs WHERE id = $1",
        jid,
    )
    assert (row["status"], row["attempts"], row["arq_job_id"]) == ("done", 2, f"{jid}~2")
    events = [
        r[0]
        for r in await db_fetch(
            migrated_dsn,
            "SELECT event_type FROM ops.events WHERE aggregate_id = $1 ORDER BY version",
            jid,
        )
    ]
    assert events.count("job.retrying") == 1 and events[-1] == "job.completed"
    assert fake_openai.stats()["statuses"] == {"500": 1, "200": 1}


async def test_reconciler_sees_a_handed_off_job_as_alive(redis_server) -> None:
    redis = await client.connect(redis_server.url)
    try:
        await redis.set(keys.HANDED_OFF_KEY_PREFIX + "job-x", b"1", px=5000)
        assert await job_alive(redis, ["job-x"])
        await redis.delete(keys.HANDED_OFF_KEY_PREFIX + "job-x")
        assert not await job_alive(redis, ["job-x"])
    finally:
        await redis.aclose()
