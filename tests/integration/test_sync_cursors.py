"""Sync cursors (issue 19, item 3): a page's ledger rows and its cursor's move commit in one
transaction, so a connector killed anywhere and restarted from its stored cursor sends
every item once. Real PostgreSQL, Redis, arq worker, OpenAI-compatible server, and a
real connector process (``tests.support.connector_proc``) killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support.harness import communication, db_fetch, db_val, new_workspace, run_worker_burst
from worker import client
from worker.db.pool import create_pool
from worker.queue.reconcile import reconcile

REPO = Path(__file__).resolve().parents[2]


async def _pool(settings: Any, dsn: str) -> asyncpg.Pool:
    return await create_pool(settings, dsn, min_size=1, max_size=2)


async def test_the_cursor_moves_with_the_pages_jobs_and_reads_back(
    settings_factory: Any, migrated_dsn: str, fake_openai: Any
) -> None:
    settings = settings_factory()
    ws = await new_workspace(migrated_dsn)
    db, redis = await _pool(settings, migrated_dsn), await client.connect(settings.redis_url)
    try:
        assert await client.read_cursor(db, ws, "gmail", "inbox") is None
        page = [communication(ws, f"c-{i}", f"Cursor message {i}.") for i in range(5)]
        cursor = client.Cursor(ws, "gmail", "inbox", {"historyId": "8812"})
        results = await client.enqueue_many(redis, page, db=db, settings=settings, cursor=cursor)
        assert all(isinstance(r, str) for r in results)
        assert await client.read_cursor(db, ws, "gmail", "inbox") == {"historyId": "8812"}
        [source] = await client.integrations(db, ws)
        assert source["source"] == "gmail" and source["status"] == "active"
        assert source["last_synced_at"] is not None and source["last_error"] is None
        assert source["cursors"] == {"inbox": {"historyId": "8812"}}
        assert (
            await db_val(
                migrated_dsn, "SELECT count(*) FROM ops.ingestion_jobs WHERE workspace_id = $1", ws
            )
            == 5
        )

        # a failed sync shows on the integration until a page moves the cursor again
        await client.record_sync_error(db, ws, "gmail", "Gmail API 503 after 5 tries")
        [source] = await client.integrations(db, ws)
        assert (source["status"], source["last_error"]) == ("error", "Gmail API 503 after 5 tries")
        more = [communication(ws, "c-5", "One more.")]
        cursor = client.Cursor(ws, "gmail", "inbox", {"historyId": "8813"})
        await client.enqueue_many(redis, more, db=db, settings=settings, cursor=cursor)
        [source] = await client.integrations(db, ws)
        assert (source["status"], source["last_error"]) == ("active", None)

        # a cursor names its source: another source's item in the page is refused whole
        other = communication(ws, "s-1", "From Slack.", source="slack")
        with pytest.raises(ValueError, match="cursor"):
            await client.enqueue_many(
                redis,
                [other],
                db=db,
                settings=settings,
                cursor=client.Cursor(ws, "gmail", "inbox", {"historyId": "9999"}),
            )
        with pytest.raises(ValueError, match="pass db"):
            await client.enqueue_many(redis, more, settings=settings, cursor=cursor)
        assert await client.read_cursor(db, ws, "gmail", "inbox") == {"historyId": "8813"}
        assert (
            await db_val(
                migrated_dsn,
                "SELECT count(*) FROM ops.ingestion_jobs "
                "WHERE workspace_id = $1 AND source = 'slack'",
                ws,
            )
            == 0
        )
    finally:
        await redis.aclose()
        await db.close()


async def test_a_page_that_cannot_be_recorded_leaves_the_cursor_where_it_was(
    settings_factory: Any, migrated_dsn: str, fake_openai: Any
) -> None:
    """The cursor's move fails (its workspace does not exist): the page's jobs, recorded
    in the same transaction, are rolled back with it; nothing reaches Redis."""
    import uuid

    settings = settings_factory()
    ghost = uuid.uuid4()
    db, redis = await _pool(settings, migrated_dsn), await client.connect(settings.redis_url)
    try:
        page = [communication(ghost, "g-1", "Nobody home.")]
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await client.enqueue_many(
                redis,
                page,
                db=db,
                settings=settings,
                cursor=client.Cursor(ghost, "gmail", "inbox", 1),
            )
        assert (
            await db_val(
                migrated_dsn, "SELECT count(*) FROM ops.ingestion_jobs WHERE external_id = 'g-1'"
            )
            == 0
        )
        assert await redis.zcard(settings.queue_name) == 0
    finally:
        await redis.aclose()
        await db.close()


def _last(progress: Path) -> str:
    lines = progress.read_text().splitlines() if progress.exists() else []
    return lines[-1] if lines else ""


async def _kill_when(proc: subprocess.Popen[bytes], progress: Path, want: str) -> str | None:
    """SIGKILL the connector as soon as its last progress line starts with ``want``
    (``begin``: inside a page; ``end``: between pages). None if it finished first."""
    while proc.poll() is None:
        last = _last(progress)
        if last.startswith(want):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            return last
        await asyncio.sleep(0.0005)
    return None


async def test_a_connector_killed_inside_and_between_pages_sends_every_item_once(
    settings_factory: Any,
    migrated_dsn: str,
    fake_openai: Any,
    redis_server: Any,
    tmp_path: Path,
) -> None:
    settings = settings_factory(reconcile_grace_s=0)
    ws = await new_workspace(migrated_dsn)
    items, page = 300, 25
    progress = tmp_path / "progress"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": migrated_dsn,
        "REDIS_URL": redis_server.url,
        "QUEUE_NAME": settings.queue_name,
        "WORKSPACE": str(ws),
        "ITEMS": str(items),
        "PAGE": str(page),
        "PROGRESS": str(progress),
        "LOG_FORMAT": "json",
    }
    kills: list[str] = []
    plan = ["begin", "end", "begin", "end", "begin"]  # inside, between, ... then run out
    for _attempt in range(40):
        proc = subprocess.Popen(  # noqa: ASYNC220 - the connector runs alongside, by design
            [sys.executable, "-m", "tests.support.connector_proc"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        want = plan[len(kills)] if len(kills) < len(plan) else None
        killed = await _kill_when(proc, progress, want) if want else None
        if killed is None:
            if proc.poll() is None:
                proc.wait(60)
            assert proc.returncode == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            if _last(progress) == "done":
                break
        else:
            kills.append(killed)
    assert _last(progress) == "done", progress.read_text()[-500:]
    inside = [k for k in kills if k.startswith("begin")]
    between = [k for k in kills if k.startswith("end")]
    assert inside and between, kills

    # the transport may have lost pages whose rows committed (killed before the send):
    # the reconciler sends them, the worker runs everything
    db, redis = await _pool(settings, migrated_dsn), await client.connect(settings.redis_url)
    try:
        for _ in range(5):
            await reconcile(settings, db, redis, grace_s=0)
            await run_worker_burst(settings)
            done = await db_val(
                migrated_dsn,
                "SELECT count(*) FROM ops.ingestion_jobs WHERE "
                "workspace_id = $1 AND status = 'done'",
                ws,
            )
            if done == items:
                break
    finally:
        await redis.aclose()
        await db.close()
    rows = await db_fetch(
        migrated_dsn,
        "SELECT external_id, status::text FROM ops.ingestion_jobs WHERE workspace_id = $1",
        ws,
    )
    assert sorted(r["external_id"] for r in rows) == sorted(f"src-{i}" for i in range(items))
    assert {r["status"] for r in rows} == {"done"}
    assert (
        await db_val(
            migrated_dsn, "SELECT count(*) FROM comms.communications WHERE workspace_id = $1", ws
        )
        == items
    )
    # each job was received once: no page was recorded twice
    received = await db_fetch(
        migrated_dsn,
        "SELECT aggregate_id, count(*) AS n FROM ops.events "
        "WHERE workspace_id = $1 AND event_type = 'job.received' "
        "GROUP BY aggregate_id",
        ws,
    )
    assert len(received) == items and {r["n"] for r in received} == {1}
    assert await db_val(
        migrated_dsn, "SELECT cursor FROM ops.sync_cursors WHERE workspace_id = $1", ws
    ) == str(items)
    print(f"\nconnector killed {len(kills)} times: {kills}")
