"""Ledger payload retention (issue 19, item 4) against the real server and the real worker.

Items go through the arq worker into a database of their own (a clone of a migrated
template); finished rows are aged by moving ``finished_at`` into the past, then the
maintenance pass (or its retention step) runs. What must hold: old finished payloads are
dropped with the hash, size and outcome kept; recent finished, queued and running rows
keep theirs; a dry run changes nothing; a second pass is a no-op; a re-sent item is still
a no-op after its payload was dropped, and a re-sent failed one gets it back; small
batches cover every row, and a row another transaction holds is left for the next pass.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from tests.conftest import run_sql
from tests.support.harness import communication, db_fetch, new_workspace, run_worker_burst
from tests.support.openai_server import OpenAIServer
from worker import client
from worker.core.settings import Settings
from worker.db.pool import connect, create_pool
from worker.maintenance import retention, run_maintenance
from worker.servers.embedded import EmbeddedPostgres

AGED = "UPDATE ops.ingestion_jobs SET finished_at = now() - interval '8 days' WHERE id = ANY($1)"
ROWS = """
SELECT id, status::text AS status, content_hash, last_error, error_field, attempts,
       payload, result, octet_length(payload::text) AS payload_bytes
FROM ops.ingestion_jobs WHERE workspace_id = $1 OR id = ANY($2::uuid[])
"""


@pytest.fixture(scope="module")
def template(pg: EmbeddedPostgres) -> Iterator[str]:
    from worker.db.migrate import Migrator

    name = f"retention_tpl_{uuid.uuid4().hex[:8]}"
    run_sql(pg.dsn(), f'CREATE DATABASE "{name}"')
    asyncio.run(Migrator(pg.dsn(name)).up())
    yield name
    run_sql(pg.dsn(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def db(pg: EmbeddedPostgres, template: str) -> AsyncIterator[str]:
    """A migrated database of this test's own: the pass prunes the whole ledger."""
    name = f"retention_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        yield pg.dsn(name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def send(settings: Settings, payloads: list[dict[str, Any]]) -> list[str]:
    """Through the client with the ledger, as a connector sends them."""
    pool = await create_pool(settings, settings.database_url, min_size=1, max_size=1)
    redis = await client.connect(settings.redis_url)
    try:
        out = await client.enqueue_many(redis, payloads, db=pool, settings=settings)
    finally:
        await redis.aclose()
        await pool.close()
    assert all(isinstance(i, str) for i in out), out
    return [str(i) for i in out]


async def rows(dsn: str, ws: uuid.UUID, ids: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    found = await db_fetch(dsn, ROWS, ws, [uuid.UUID(i) for i in ids])
    out = {}
    for r in found:
        row = dict(r)
        row["result"] = json.loads(row["result"])
        row["payload"] = None if row["payload"] is None else json.loads(row["payload"])
        out[str(r["id"])] = row
    return out


async def execute(dsn: str, sql: str, *args: Any) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def test_old_finished_payloads_are_dropped_and_the_rest_kept(
    db: str, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(database_url=db)
    ws = await new_workspace(db)
    # A superseded job: v1 recorded first (its own queue, not run yet), v2 stored, then v1.
    older = settings_factory(database_url=db)
    [superseded] = await send(older, [communication(ws, "sup", "First draft of the memo.")])
    done = await send(
        settings,
        [communication(ws, f"m{i}", f"Message number {i} about the budget.") for i in range(6)]
        + [communication(ws, "sup", "Final version of the memo.")],
    )
    redis = await client.connect(settings.redis_url)
    try:  # an invalid payload: recorded failed, its raw payload kept for diagnosis
        rejected = str(uuid.uuid4())
        bad = communication(ws, "bad", "Hello", channel="pigeon")
        await redis.enqueue_job("ingest", bad, _job_id=rejected, _queue_name=settings.queue_name)
    finally:
        await redis.aclose()
    await run_worker_burst(settings)
    await run_worker_burst(older)
    # Unfinished rows: two queued (never run), one of them marked running as a worker would.
    queued = await send(
        settings_factory(database_url=db),
        [communication(ws, f"q{i}", f"Waiting message {i}.") for i in range(2)],
    )
    await execute(
        db,
        "UPDATE ops.ingestion_jobs SET status = 'running', attempts = 1 WHERE id = $1",
        uuid.UUID(queued[1]),
    )
    before = await rows(db, ws)
    rejected_id = next(i for i, r in before.items() if r["status"] == "failed")
    assert before[superseded]["status"] == "skipped"
    assert {before[i]["status"] for i in done} == {"done"}
    assert before[rejected_id]["payload"]["channel"] == "pigeon"
    old = [*done[:4], superseded, rejected_id]
    recent = done[4:]
    # Aged: four done, the skipped and the failed one; and the unfinished rows too (their
    # finished_at is not theirs to have, but status decides, not the timestamp alone).
    await execute(db, AGED, [uuid.UUID(i) for i in old + queued])

    with capture_logs() as dry_logs:
        dry = await run_maintenance(settings, db, dry_run=True)
    [planned] = dry.actions_of("ledger_retention")
    assert planned.status == "planned" and planned.details["rows"] == len(old)
    assert planned.details["stored_bytes"] > 0 and planned.details["batches"] == 0
    assert await rows(db, ws) == before  # nothing changed
    [dry_line] = [e for e in dry_logs if e["event"] == "maintenance.ledger_retention"]
    assert dry_line["status"] == "planned" and dry_line["rows"] == len(old)

    with capture_logs() as logs:
        report = await run_maintenance(settings, db)
    assert report.status == "succeeded", [a for a in report.actions if a.status == "failed"]
    [action] = report.actions_of("ledger_retention", "done")
    assert action.details["rows"] == len(old) and action.details["batches"] == 1
    assert action.details["retention_s"] == timedelta(days=7).total_seconds()
    assert action.details["payload_bytes"] == sum(before[i]["payload_bytes"] for i in old)
    assert report.counts()["ledger_payloads_pruned"] == len(old)
    assert report.to_dict()["counts"]["ledger_payloads_pruned"] == len(old)
    [line] = [e for e in logs if e["event"] == "maintenance.ledger_retention"]
    assert line["status"] == "done" and line["rows"] == len(old)
    [finished] = [e for e in logs if e["event"] == "maintenance.finished"]
    assert finished["ledger_payloads_pruned"] == len(old)
    run = await db_fetch(
        db, "SELECT summary FROM ops.maintenance_runs WHERE id = $1", report.run_id
    )
    assert json.loads(run[0]["summary"])["counts"]["ledger_payloads_pruned"] == len(old)

    after = await rows(db, ws)
    for i in old:
        was, now = before[i], after[i]
        assert now["payload"] is None
        result = dict(now["result"])
        for column in ("status", "content_hash", "last_error", "error_field", "attempts"):
            assert now[column] == was[column], (i, column)
        assert result.pop("payload_bytes") == was["payload_bytes"]
        assert result.pop("payload_pruned_at")
        assert result == was["result"]  # the outcome as it was
    assert after[rejected_id]["last_error"] and after[superseded]["result"]["reason"]
    for i in recent + queued:  # recent finished, queued, running: untouched
        assert after[i] == before[i]

    again = await run_maintenance(settings, db)
    [second] = again.actions_of("ledger_retention", "done")
    assert second.details["rows"] == 0 and second.details["payload_bytes"] == 0
    assert await rows(db, ws) == after


async def test_resent_items_after_pruning(
    db: str, settings_factory: Callable[..., Settings], fake_openai: OpenAIServer
) -> None:
    """A done item sent again is a no-op, through the client or straight to Redis; a
    failed one runs again and its row gets the payload back (single and page pickups)."""
    settings = settings_factory(database_url=db, job_max_tries=2, embed_max_retries=1)
    ws = await new_workspace(db)
    ok = communication(ws, "ok", "The contract is signed.")
    [done] = await send(settings, [ok])
    await run_worker_burst(settings)
    failing = [communication(ws, f"f{i}", f"Attempt {i} at the report.") for i in range(3)]
    fake_openai.push_faults(*[{"wrong_dim": True}] * 60)
    failed = [(await send(settings, [p]))[0] for p in failing]  # one arq job each
    await run_worker_burst(settings)
    fake_openai.reset()
    before = await rows(db, ws)
    assert before[done]["status"] == "done"
    assert {before[i]["status"] for i in failed} == {"failed"}, [before[i] for i in failed]
    await execute(db, AGED, [uuid.UUID(i) for i in [done, *failed]])
    report = await run_maintenance(settings, db)
    assert report.actions_of("ledger_retention", "done")[0].details["rows"] == 4
    pruned = await rows(db, ws)
    assert all(pruned[i]["payload"] is None for i in [done, *failed])

    # The done item again: through the client (a no-op, nothing sent), then straight to Redis
    # as a connector in another language would (the worker records a no-op).
    assert await send(settings, [ok]) == [done]
    redis = await client.connect(settings.redis_url)
    try:
        # arq keeps a finished job's result for an hour and refuses its id meanwhile.
        await redis.delete(*[f"arq:result:{i}" for i in [done, *failed]])
        await redis.enqueue_job("ingest", ok, _job_id=done, _queue_name=settings.queue_name)
        # Two failed items again as one hand-made page job (the pickups of a page start
        # together: ledger.start_many); the third through the client (one pickup).
        page = {"items": failing[1:]}
        await redis.enqueue_job("ingest_page", page, _queue_name=settings.queue_name)
    finally:
        await redis.aclose()
    assert await send(settings, failing[:1]) == failed[:1]
    requests = fake_openai.stats()["count"]
    await run_worker_burst(settings)
    assert fake_openai.stats()["count"] > requests  # the failed ones were embedded this time

    after = await rows(db, ws)
    assert after[done]["payload"] is None and after[done]["status"] == "done"
    assert after[done]["result"] == pruned[done]["result"]  # untouched by the no-ops
    events = await db_fetch(
        db,
        "SELECT event_type, payload->>'via' AS via FROM ops.events "
        "WHERE aggregate_id = $1 ORDER BY version",
        uuid.UUID(done),
    )
    noops = [e["via"] for e in events if e["event_type"] == "job.noop"]
    assert sorted(noops, key=str) == sorted(["client", None], key=str)
    assert [e["event_type"] for e in events].count("content.stored") == 1
    for i, payload in zip(failed, failing, strict=True):
        assert after[i]["status"] == "done", after[i]
        restored = after[i]["payload"]  # back in the row, as the delivery carried it
        assert restored is not None and restored["body"] == payload["body"]
    # The client sends its validated model's dump, the one its first send recorded.
    assert after[failed[0]]["payload"] == before[failed[0]]["payload"]


async def test_batches_cover_every_row_and_skip_locked_ones(
    db: str, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(database_url=db)
    ws = await new_workspace(db)
    ids = await send(
        settings, [communication(ws, f"b{i}", f"Batch message {i}.") for i in range(25)]
    )
    await run_worker_burst(settings)
    await execute(db, AGED, [uuid.UUID(i) for i in ids])
    holder = await asyncpg.connect(db)
    conn = await connect(settings, db)
    try:
        # A worker recording a re-send holds one row: skipped, not waited for.
        tx = holder.transaction()
        await tx.start()
        await holder.execute(
            "SELECT 1 FROM ops.ingestion_jobs WHERE id = $1 FOR UPDATE", uuid.UUID(ids[7])
        )
        keep = timedelta(days=7)
        dry = await retention.prune(conn, keep, dry_run=True, batch_rows=4)
        assert (dry.rows, dry.batches, dry.payload_bytes) == (25, 0, 0)
        first = await retention.prune(conn, keep, batch_rows=4)
        await tx.rollback()
        # 24 rows in batches of 4: six full batches and a last, empty one.
        assert (first.rows, first.batches) == (24, 7)
        left = await rows(db, ws)
        assert [i for i, r in left.items() if r["payload"] is not None] == [ids[7]]
        second = await retention.prune(conn, keep, batch_rows=4)
        assert (second.rows, second.batches) == (1, 1)
        third = await retention.prune(conn, keep, batch_rows=4)
        assert (third.rows, third.batches) == (0, 1)
        # Within the retention (8 days ago is not older than 9 days): nothing to do.
        assert (await retention.prune(conn, timedelta(days=9), dry_run=True)).rows == 0
    finally:
        await conn.close()
        await holder.close()
    assert all(r["payload"] is None for r in (await rows(db, ws)).values())
