"""``client.enqueue_many``: a connector's page through the ledger and Redis in a few round
trips, against real PostgreSQL, Redis and the arq Worker."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.support.harness import (
    communication,
    db_fetch,
    db_val,
    media,
    mutate,
    new_workspace,
    run_worker_burst,
    transcript,
)
from worker import client
from worker.core.payloads import LEDGER_PAYLOAD_KEY, PayloadError, job_id, parse_payload
from worker.db.ledger import project
from worker.db.pool import create_pool
from worker.queue import serialization

TURNS = [
    ("Ann", 0, 4000, "Budget review for the quarter."),
    ("Bob", 4000, 9000, "Hiring plan is on track."),
]


async def queued_items(redis: Any, queue: str) -> dict[str, list[str]]:
    """The jobs in ``queue``: arq id -> the job ids of the items it carries."""
    out: dict[str, list[str]] = {}
    for member in await redis.zrange(queue, 0, -1):
        arq_id = member.decode()
        job = serialization.loads(await redis.get(f"arq:job:{arq_id}"))
        arg = job["a"][0]
        payloads = arg["items"] if job["f"] == "ingest_page" else [arg]
        out[arq_id] = [
            p[LEDGER_PAYLOAD_KEY] if LEDGER_PAYLOAD_KEY in p else job_id(parse_payload(p))
            for p in payloads
        ]
    return out


async def _events(dsn: str, ws: uuid.UUID) -> list[Any]:
    return await db_fetch(
        dsn,
        "SELECT aggregate_id, version, event_type, payload FROM ops.events "
        "WHERE workspace_id = $1 ORDER BY aggregate_id, version",
        ws,
    )


async def test_a_page_with_bad_items_enqueues_the_rest_and_a_resend_is_noops(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    settings = settings_factory(enqueue_page_items=3)  # several pages for 6 distinct jobs
    ws = await new_workspace(migrated_dsn)
    good = [communication(ws, f"m-{i}", f"Message number {i} about the launch.") for i in range(4)]
    good += [transcript(ws, "call-1", TURNS), media(ws, "rec-1", [(0, 900, "Demo recording.")])]
    nobody = communication(uuid.uuid4(), "orphan", "Workspace that does not exist.")
    broken = mutate(communication(ws, "bad", "x"), channel="carrier-pigeon")
    page = [good[0], broken, *good[1:], good[2], nobody]
    pool = await create_pool(settings, migrated_dsn, min_size=1, max_size=2)
    redis = await client.connect(settings.redis_url)
    try:
        results = await client.enqueue_many(redis, page, db=pool, settings=settings)
        ids = [job_id(parse_payload(p)) for p in good]
        assert results[0] == ids[0] and results[2:7] == ids[1:] and results[7] == ids[2]
        assert isinstance(results[1], PayloadError) and results[1].field == "channel"
        assert isinstance(results[8], PayloadError)
        assert (results[8].field, results[8].reason) == ("workspace_id", "no such workspace")
        # one queued ledger row and one job.received per distinct good item; the new items
        # of each ledger page travel as one page job, which their rows name
        rows = await db_fetch(
            migrated_dsn,
            "SELECT id::text, status::text, arq_job_id FROM "
            "ops.ingestion_jobs WHERE workspace_id = $1",
            ws,
        )
        assert sorted((r[0], r[1]) for r in rows) == sorted((i, "queued") for i in ids)
        assert [e["event_type"] for e in await _events(migrated_dsn, ws)] == ["job.received"] * 6
        jobs = await queued_items(redis, settings.queue_name)
        assert len(jobs) == 2 and all(j.startswith("page:") for j in jobs)
        assert sorted(i for items in jobs.values() for i in items) == sorted(ids)
        assert all(r["id"] in jobs[r["arq_job_id"]] for r in rows)

        await run_worker_burst(settings)
        assert (
            await db_val(
                migrated_dsn,
                "SELECT count(*) FROM ops.ingestion_jobs WHERE "
                "workspace_id = $1 AND status = 'done'",
                ws,
            )
            == 6
        )
        requests = fake_openai.stats()["count"]
        assert requests >= 1

        # The same page again: the ledger turns every known item into a no-op, Redis sees
        # nothing and no embedding request is made.
        again = await client.enqueue_many(redis, page, db=pool, settings=settings)
        assert [r for r in again if isinstance(r, str)] == [
            r for r in results if isinstance(r, str)
        ]
        assert await redis.zcard(settings.queue_name) == 0
    finally:
        await redis.aclose()
        await pool.close()
    await run_worker_burst(settings)
    assert fake_openai.stats()["count"] == requests
    events = await _events(migrated_dsn, ws)
    noops = [e for e in events if e["event_type"] == "job.noop"]
    assert sorted(str(e["aggregate_id"]) for e in noops) == sorted(ids)
    # every stream stays gap-free and the ledger is still the events' projection
    by_job: dict[Any, list[int]] = {}
    for e in events:
        by_job.setdefault(e["aggregate_id"], []).append(e["version"])
    assert all(v == list(range(1, len(v) + 1)) for v in by_job.values())
    projected = project(events)
    for row in await db_fetch(
        migrated_dsn, "SELECT id, status::text FROM ops.ingestion_jobs WHERE workspace_id = $1", ws
    ):
        assert projected[row["id"]].status == row["status"] == "done"


async def test_overlapping_pages_from_concurrent_connectors_record_each_job_once(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    """Two connectors push the same 60 new items at once, in opposite orders, plus items of
    their own: each job gets one ledger row, one job.received and travels in exactly one
    arq job (the insert race is resolved by locking the winner's row; no deadlock; the
    loser does not re-send what the winner's page carries)."""
    settings = settings_factory(enqueue_page_items=20)
    ws = await new_workspace(migrated_dsn)
    shared = [communication(ws, f"s-{i}", f"Shared thread message {i}.") for i in range(60)]
    own_a = [communication(ws, f"a-{i}", f"Only A sends {i}.") for i in range(5)]
    own_b = [communication(ws, f"b-{i}", f"Only B sends {i}.") for i in range(5)]
    pool = await create_pool(settings, migrated_dsn, min_size=2, max_size=4)
    redis = await client.connect(settings.redis_url)
    try:
        a, b = await asyncio.gather(
            client.enqueue_many(redis, [*shared, *own_a], db=pool, settings=settings),
            client.enqueue_many(redis, [*reversed(shared), *own_b], db=pool, settings=settings),
        )
        queued = await queued_items(redis, settings.queue_name)
    finally:
        await redis.aclose()
        await pool.close()
    assert not [r for r in (*a, *b) if isinstance(r, PayloadError)]
    assert set(a) & set(b) == {job_id(parse_payload(p)) for p in shared}
    items = [i for carried in queued.values() for i in carried]
    assert len(items) == len(set(items)) == 70  # each in exactly one job
    rows = await db_val(
        migrated_dsn, "SELECT count(*) FROM ops.ingestion_jobs WHERE workspace_id = $1", ws
    )
    assert rows == 70
    received = await db_fetch(
        migrated_dsn,
        "SELECT aggregate_id, count(*) AS n FROM ops.events "
        "WHERE workspace_id = $1 AND event_type = 'job.received' "
        "GROUP BY aggregate_id",
        ws,
    )
    assert len(received) == 70 and {r["n"] for r in received} == {1}


async def test_without_ledger_a_job_arq_still_holds_is_not_enqueued_twice(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    """The page script refuses a job whose key (or kept result) exists, as arq does; the
    jobs it writes are arq's own format (the Worker runs them)."""
    settings = settings_factory()
    ws = await new_workspace(migrated_dsn)
    first = [communication(ws, "x-1", "First message."), communication(ws, "x-2", "Second.")]
    redis = await client.connect(settings.redis_url)
    try:
        ids = await client.enqueue_many(redis, first, settings=settings)
        job_key = f"arq:job:{ids[0]}"
        before = await redis.get(job_key)
        await asyncio.sleep(0.01)  # a second write would carry a later enqueue time
        again = await client.enqueue_many(
            redis, [*first, communication(ws, "x-3", "Third.")], settings=settings
        )
        assert again[:2] == ids
        assert await redis.get(job_key) == before
        assert await redis.zcard(settings.queue_name) == 3
        await run_worker_burst(settings)
        # finished: arq keeps the result, so the id is refused again
        await client.enqueue_many(redis, first, settings=settings)
        assert await redis.zcard(settings.queue_name) == 0
    finally:
        await redis.aclose()
    done = await db_val(
        migrated_dsn,
        "SELECT count(*) FROM ops.ingestion_jobs WHERE workspace_id = $1 AND status = 'done'",
        ws,
    )
    assert done == 3
