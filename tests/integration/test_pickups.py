"""Ledger pickups in groups (``worker.ingest.pickup``): the items of a page job start in one
transaction, with the same rows and events as one pickup per item."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.support.harness import communication, db_fetch, make_settings, new_workspace
from worker import client
from worker.core.payloads import content_hash, job_id, parse_payload
from worker.db import ledger
from worker.db.pool import create_pool
from worker.ingest.pickup import Pickups


def _start(payload: dict[str, Any], arq_id: str = "page:t") -> ledger.Start:
    model = parse_payload(payload)
    ref = ledger.JobRef(uuid.UUID(job_id(model)), model.workspace_id, model.kind, arq_job_id=arq_id)
    return ledger.Start(
        ref, model.source, model.external_id, content_hash(model), payload, noop_key="noop:1"
    )


async def test_items_arriving_together_start_in_one_group(
    migrated_dsn: str, redis_server: Any, fake_openai: Any
) -> None:
    settings = make_settings(migrated_dsn, redis_server.url, fake_openai.base_url)
    ws = await new_workspace(migrated_dsn)
    known = [communication(ws, f"known-{i}", f"Known message {i}.") for i in range(5)]
    direct = communication(ws, "direct", "Sent straight to Redis: no ledger row yet.")
    nobody = communication(uuid.uuid4(), "nobody", "No such workspace.")
    pool = await create_pool(settings, migrated_dsn, min_size=1, max_size=4)
    redis = await client.connect(settings.redis_url)
    try:
        await client.enqueue_many(redis, known, db=pool, settings=settings)
        done = _start(known[0])  # finished before this pickup: a no-op
        await db_fetch(
            migrated_dsn,
            "UPDATE ops.ingestion_jobs SET status = 'done' WHERE id = $1",
            done.ref.job_id,
        )
        pickups = Pickups(pool, settings)
        starts = [done, *map(_start, known[1:]), _start(direct), _start(nobody)]
        results = await asyncio.gather(*(pickups.start(s) for s in starts), return_exceptions=True)
        await pickups.aclose()
        assert pickups.writer.stats.groups == 1 and pickups.writer.stats.largest == len(starts)
    finally:
        await redis.aclose()
        await pool.close()
    first, *started, from_redis, unknown = results
    assert isinstance(first, ledger.Pickup) and first.finished
    assert all(
        isinstance(p, ledger.Pickup) and p.status == "running" and p.attempt == 1 and not p.created
        for p in started
    )
    assert isinstance(from_redis, ledger.Pickup) and from_redis.created
    assert type(unknown).__name__ == "ForeignKeyViolationError"  # that item alone fails
    rows = {
        r["id"]: (r["status"], r["attempts"], r["arq_job_id"])
        for r in await db_fetch(
            migrated_dsn,
            "SELECT id, status::text AS status, attempts, arq_job_id "
            "FROM ops.ingestion_jobs WHERE workspace_id = $1",
            ws,
        )
    }
    assert rows[done.ref.job_id][0] == "done"
    for s in starts[1:6]:
        assert rows[s.ref.job_id] == ("running", 1, "page:t")
    events = await db_fetch(
        migrated_dsn,
        "SELECT aggregate_id, event_type FROM ops.events "
        "WHERE workspace_id = $1 ORDER BY aggregate_id, version",
        ws,
    )
    by_job: dict[uuid.UUID, list[str]] = {}
    for e in events:
        by_job.setdefault(e["aggregate_id"], []).append(e["event_type"])
    assert by_job[done.ref.job_id] == ["job.received", "job.noop"]
    for s in starts[1:5]:
        assert by_job[s.ref.job_id] == ["job.received", "job.started"]
    assert by_job[starts[5].ref.job_id] == ["job.received", "job.started"]
