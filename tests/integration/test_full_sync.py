"""Full syncs (issue 19, item 2) through the real client, arq worker, Redis, PostgreSQL and
the OpenAI-compatible server: the unseen items of the source go at a good end; a failed,
abandoned or cut-short sync deletes nothing it should not; live ingests are not judged."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.harness import (
    communication,
    db_fetch,
    db_val,
    media,
    new_workspace,
    run_worker_burst,
)
from worker import client
from worker.db import sync
from worker.db.pool import create_pool


class Connector:
    def __init__(self, settings: Any, dsn: str) -> None:
        self.settings, self.dsn = settings, dsn

    async def __aenter__(self) -> Connector:
        self.db = await create_pool(self.settings, self.dsn, min_size=1, max_size=2)
        self.redis = await client.connect(self.settings.redis_url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.redis.aclose()
        await self.db.close()

    async def send(self, *payloads: dict[str, Any], **kw: Any) -> list[Any]:
        return await client.enqueue_many(
            self.redis, list(payloads), db=self.db, settings=self.settings, **kw
        )

    async def end(self, full: client.FullSync, **kw: Any) -> dict[str, Any]:
        return await client.end_full_sync(self.redis, self.db, full, settings=self.settings, **kw)


def mail(ws: Any, i: int, text: str = "") -> dict[str, Any]:
    return communication(ws, f"m-{i}", text or f"Mailbox message {i} about the budget.")


async def _stored(dsn: str, ws: Any) -> set[tuple[str, str]]:
    rows = await db_fetch(
        dsn,
        "SELECT 'communication' AS k, source, external_id FROM comms.communications "
        "WHERE workspace_id = $1 UNION ALL SELECT 'media', source, external_id "
        "FROM media.assets WHERE workspace_id = $1",
        ws,
    )
    return {(r["source"], r["external_id"]) for r in rows}


async def _events(dsn: str, ws: Any, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    rows = await db_fetch(
        dsn,
        "SELECT event_type, payload FROM ops.events WHERE workspace_id = $1 "
        "AND aggregate_type = 'full_sync' AND event_type LIKE $2 ORDER BY recorded_at",
        ws,
        prefix + "%",
    )
    return [(r["event_type"], json.loads(r["payload"])) for r in rows]


async def test_a_full_sync_deletes_what_the_source_no_longer_has(
    settings_factory: Any, migrated_dsn: str, fake_openai: Any
) -> None:
    settings = settings_factory(sync_cleanup_batch=2)  # several batches
    ws = await new_workspace(migrated_dsn)
    async with Connector(settings, migrated_dsn) as c:
        await c.send(*[mail(ws, i) for i in range(7)])
        await c.send(media(ws, "rec-1", [(0, 3000, "A loom recording.")]))  # another source
        await run_worker_burst(settings)

        full = await client.begin_full_sync(c.db, ws, "gmail")
        assert await client.current_full_sync(c.db, ws, "gmail") == full
        # the source now holds m-0..m-3 (m-2 edited); m-4..m-6 were deleted upstream
        await c.send(mail(ws, 0), mail(ws, 1), full_sync=full)
        await c.send(mail(ws, 2, "Mailbox message 2, edited."), mail(ws, 3), full_sync=full)
        # a live message arrives meanwhile, outside the sync's pages: not the sync's to judge
        await c.send(mail(ws, 99))
        report = await c.end(full)
        assert report == {"state": "done", "seen": 4, "deleted": 3}
        await run_worker_burst(settings)
        assert await client.current_full_sync(c.db, ws, "gmail") is None

    stored = await _stored(migrated_dsn, ws)
    assert stored == {("gmail", f"m-{i}") for i in (0, 1, 2, 3, 99)} | {("loom", "rec-1")}
    assert (
        await db_val(
            migrated_dsn,
            "SELECT body FROM comms.communications WHERE external_id = 'm-2' AND workspace_id = $1",
            ws,
        )
        == "Mailbox message 2, edited."
    )
    assert await _events(migrated_dsn, ws, "sync.") == [
        ("sync.completed", {"state": "done", "seen": 4, "deleted": 3})
    ]
    assert (
        await db_val(migrated_dsn, "SELECT count(*) FROM ops.sync_seen WHERE workspace_id = $1", ws)
        == 0
    )
    deletions = await db_val(
        migrated_dsn,
        "SELECT count(*) FROM ops.ingestion_jobs WHERE workspace_id = $1 "
        "AND result ? 'deleted' AND status = 'done'",
        ws,
    )
    assert deletions == 3


async def test_a_failed_or_abandoned_sync_deletes_nothing(
    settings_factory: Any, migrated_dsn: str, fake_openai: Any
) -> None:
    settings = settings_factory()
    ws = await new_workspace(migrated_dsn)
    async with Connector(settings, migrated_dsn) as c:
        await c.send(*[mail(ws, i) for i in range(4)])
        await run_worker_burst(settings)

        failing = await client.begin_full_sync(c.db, ws, "gmail")
        await c.send(mail(ws, 0), full_sync=failing)
        report = await c.end(failing, error="Gmail API 500 on page 2")
        assert report == {"state": "failed", "seen": 1, "deleted": 0}
        [source] = await client.integrations(c.db, ws)
        assert (source["status"], source["last_error"]) == ("error", "Gmail API 500 on page 2")

        abandoned = await client.begin_full_sync(c.db, ws, "gmail")
        await c.send(mail(ws, 1), full_sync=abandoned)
        fresh = await client.begin_full_sync(c.db, ws, "gmail")  # the connector restarted
        assert fresh.id != abandoned.id
        with pytest.raises(ValueError, match="not running"):
            await c.send(mail(ws, 2), full_sync=abandoned)
        with pytest.raises(ValueError, match="not the current"):
            await c.end(abandoned)
        await run_worker_burst(settings)
    assert await _stored(migrated_dsn, ws) == {("gmail", f"m-{i}") for i in range(4)}
    assert [e for e, _ in await _events(migrated_dsn, ws, "sync.")] == [
        "sync.failed",
        "sync.failed",
    ]
    assert (
        await db_val(
            migrated_dsn, "SELECT count(*) FROM ops.sync_seen WHERE sync_id = $1", abandoned.id
        )
        == 0
    )


async def test_an_end_cut_short_is_finished_by_ending_again(
    settings_factory: Any, migrated_dsn: str, fake_openai: Any
) -> None:
    """The connector dies after the first batch of deletions was recorded: ending the same
    sync again (current_full_sync finds it) makes the same deletion jobs, not new ones."""
    settings = settings_factory(sync_cleanup_batch=2)
    ws = await new_workspace(migrated_dsn)
    async with Connector(settings, migrated_dsn) as c:
        await c.send(*[mail(ws, i) for i in range(6)])
        await run_worker_burst(settings)
        full = await client.begin_full_sync(c.db, ws, "gmail")
        await c.send(mail(ws, 0), full_sync=full)
        # the first part of an end, as end_full_sync does it, then the process dies
        async with c.db.acquire() as conn:
            deleted_at = await sync.start_ending(conn, full)
            first = await sync.unseen(conn, full, ("communication", ""), 2)
        await c.send(
            *[
                {
                    "kind": "deletion",
                    "workspace_id": str(ws),
                    "source": "gmail",
                    "external_id": ext,
                    "deleted_kind": kind,
                    "deleted_at": deleted_at.isoformat(),
                }
                for kind, ext in first
            ]
        )
        resumed = await client.current_full_sync(c.db, ws, "gmail")
        assert resumed == full
        report = await c.end(resumed)
        assert report == {"state": "done", "seen": 1, "deleted": 5}
        await run_worker_burst(settings)
    assert await _stored(migrated_dsn, ws) == {("gmail", "m-0")}
    deletions = await db_fetch(
        migrated_dsn,
        "SELECT external_id, count(*) AS n FROM ops.ingestion_jobs "
        "WHERE workspace_id = $1 AND result ? 'deleted' GROUP BY external_id",
        ws,
    )
    assert sorted(r["external_id"] for r in deletions) == [f"m-{i}" for i in range(1, 6)]
    assert {r["n"] for r in deletions} == {1}
