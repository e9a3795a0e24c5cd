"""Deletions (issue 19, item 1) through the real client, arq worker, Redis, PostgreSQL and
the OpenAI-compatible server: what goes, what stays, and each interleaving with an ingest
of the same item (before, during, after; re-created after; unknown; sent twice)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from tests.integration.test_email_documents import _pdf, email_payload, message
from tests.support.harness import (
    communication,
    db_fetch,
    db_val,
    media,
    new_workspace,
    run_worker_burst,
    transcript,
)
from worker import client
from worker.db.pool import create_pool


class Connector:
    """The test's connector: the client with the ledger, one page per call."""

    def __init__(self, settings: Any, dsn: str) -> None:
        self.settings, self.dsn = settings, dsn

    async def send(self, *payloads: dict[str, Any]) -> list[Any]:
        pool = await create_pool(self.settings, self.dsn, min_size=1, max_size=2)
        redis = await client.connect(self.settings.redis_url)
        try:
            return await client.enqueue_many(redis, list(payloads), db=pool, settings=self.settings)
        finally:
            await redis.aclose()
            await pool.close()

    async def delete(self, ws: Any, ext: str, kind: str, **kw: Any) -> str:
        pool = await create_pool(self.settings, self.dsn, min_size=1, max_size=2)
        redis = await client.connect(self.settings.redis_url)
        try:
            return await client.enqueue_deletion(
                redis,
                ws,
                kw.pop("source", "gmail"),
                ext,
                kind,
                db=pool,
                settings=self.settings,
                **kw,
            )
        finally:
            await redis.aclose()
            await pool.close()

    async def drop_queue(self) -> None:
        """Forget the queue's jobs (the ledger keeps them: an ingest still 'queued'), as a
        Redis that lost its data would."""
        redis = await client.connect(self.settings.redis_url)
        try:
            ids = await redis.zrange(self.settings.queue_name, 0, -1)
            await redis.delete(self.settings.queue_name, *[b"arq:job:" + i for i in ids])
        finally:
            await redis.aclose()


def deletion(ws: Any, ext: str, kind: str, source: str = "gmail", **kw: Any) -> dict[str, Any]:
    return {
        "kind": "deletion",
        "workspace_id": str(ws),
        "source": source,
        "external_id": ext,
        "deleted_kind": kind,
        **kw,
    }


async def _count(dsn: str, table: str, ws: Any, **where: Any) -> int:
    cond = "".join(f" AND {k} = ${i + 2}" for i, k in enumerate(where))
    return int(
        await db_val(
            dsn, f"SELECT count(*) FROM {table} WHERE workspace_id = $1{cond}", ws, *where.values()
        )
    )


async def _ledger(dsn: str, ws: Any, ext: str) -> list[tuple[str, dict[str, Any]]]:
    rows = await db_fetch(
        dsn,
        "SELECT status::text, result FROM ops.ingestion_jobs "
        "WHERE workspace_id = $1 AND external_id = $2 ORDER BY queued_at",
        ws,
        ext,
    )
    return [(r["status"], json.loads(r["result"])) for r in rows]


async def test_deleting_a_message_removes_its_rows_and_keeps_what_others_share(
    settings_factory: Any, migrated_dsn: str, fake_openai: Any
) -> None:
    settings = settings_factory()
    c = Connector(settings, migrated_dsn)
    ws = await new_workspace(migrated_dsn)
    pdf = _pdf()
    first = message(
        "Plant report",
        "See the report.",
        message_id="m1@x",
        attachments=(("report.pdf", "application/pdf", pdf),),
    )
    second = message(
        "Re: Plant report",
        "Thanks, the report reads well.",
        message_id="m2@x",
        references=("m1@x",),
        attachments=(("report.pdf", "application/pdf", pdf),),
    )
    solo = communication(
        ws,
        "solo",
        "A note to Zoe only.",
        thread_key="solo-t",
        recipients=[{"address": "zoe.only@example.com", "role": "to"}],
    )
    await c.send(email_payload(ws, "m1", first), email_payload(ws, "m2", second), solo)
    await run_worker_burst(settings)
    assert await _count(migrated_dsn, "comms.communications", ws) == 3
    thread = await db_fetch(
        migrated_dsn,
        "SELECT id, message_count FROM comms.threads WHERE workspace_id = $1 AND message_count = 2",
        ws,
    )
    assert len(thread) == 1
    assets = await _count(migrated_dsn, "media.assets", ws)
    assert assets == 1  # the report: one asset, linked to both messages

    # the first message goes: the second keeps the thread, the report and its contacts
    await c.delete(ws, "m1", "email")
    await run_worker_burst(settings)
    assert await _count(migrated_dsn, "comms.communications", ws, external_id="m1") == 0
    assert await _count(migrated_dsn, "comms.communications", ws) == 2
    assert (
        await db_val(
            migrated_dsn, "SELECT message_count FROM comms.threads WHERE id = $1", thread[0]["id"]
        )
        == 1
    )
    assert await _count(migrated_dsn, "media.assets", ws) == 1
    assert await _count(migrated_dsn, "media.asset_links", ws) == 1
    assert await _count(migrated_dsn, "core.contacts", ws, primary_address="ben@example.com") == 1
    # the second goes too: the thread, the report (chunks and links) and Ana's contact go
    await c.delete(ws, "m2", "communication")
    await run_worker_burst(settings)
    assert await _count(migrated_dsn, "comms.threads", ws, id=thread[0]["id"]) == 0
    for table in ("media.assets", "media.media_chunks", "media.asset_links", "comms.attachments"):
        assert await _count(migrated_dsn, table, ws) == 0, table
    assert await _count(migrated_dsn, "core.contacts", ws, primary_address="ben@example.com") == 0
    # the solo note and its contact are untouched
    assert await _count(migrated_dsn, "comms.communications", ws, external_id="solo") == 1
    assert (
        await _count(migrated_dsn, "core.contacts", ws, primary_address="zoe.only@example.com") == 1
    )

    # the ledger: the ingests' rows (their payloads held the messages) are gone, each
    # deletion is done with its counts, and content.deleted holds counts only
    for ext in ("m1", "m2"):
        [(status, result)] = await _ledger(migrated_dsn, ws, ext)
        assert status == "done" and result["deleted"] and result["found"], result
    [(_, r2)] = await _ledger(migrated_dsn, ws, "m2")
    assert r2["attachments"] == 1 and r2["threads_deleted"] == 1 and r2["contacts_deleted"] >= 3
    events = await db_fetch(
        migrated_dsn,
        "SELECT payload FROM ops.events WHERE workspace_id = $1 AND event_type = 'content.deleted'",
        ws,
    )
    assert len(events) == 2
    for e in events:
        text = e["payload"]
        assert "m1" not in json.loads(text).values() and "example.com" not in text, text


async def test_deleting_transcripts_and_media_and_unknown_items(
    settings_factory: Any, migrated_dsn: str, fake_openai: Any
) -> None:
    settings = settings_factory()
    c = Connector(settings, migrated_dsn)
    ws = await new_workspace(migrated_dsn)
    await c.send(
        transcript(
            ws,
            "call-1",
            [("Ann", 0, 4000, "Welcome to the board call."), ("Bo", 4000, 9000, "Revenue grew.")],
        ),
        media(ws, "video-1", [(0, 3000, "Onboarding walkthrough.")]),
    )
    await run_worker_burst(settings)
    await c.delete(ws, "call-1", "transcript", source="zoom")
    await c.delete(ws, "video-1", "media", source="loom")
    await c.delete(ws, "never-seen", "media", source="loom")
    await run_worker_burst(settings)
    for table in (
        "meetings.meetings",
        "meetings.transcripts",
        "meetings.transcript_chunks",
        "meetings.participants",
        "media.assets",
        "media.media_chunks",
    ):
        assert await _count(migrated_dsn, table, ws) == 0, table
    [(status, result)] = await _ledger(migrated_dsn, ws, "never-seen")
    assert status == "done" and result["found"] is False and result["vectors"] == 0


async def test_a_deletion_sent_twice_is_one_job_and_a_later_one_deletes_again(
    settings_factory: Any, migrated_dsn: str, fake_openai: Any
) -> None:
    settings = settings_factory()
    c = Connector(settings, migrated_dsn)
    ws = await new_workspace(migrated_dsn)
    note = communication(ws, "n1", "The offsite moves to Lisbon.")
    await c.send(note)
    await run_worker_burst(settings)
    when = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    a = await c.delete(ws, "n1", "communication", deleted_at=when)
    b = await c.delete(ws, "n1", "communication", deleted_at=when)
    assert a == b  # the same deletion: one job (the second is a no-op)
    await run_worker_burst(settings)
    assert await _count(migrated_dsn, "comms.communications", ws) == 0
    # the same content sent again after the deletion comes back (its earlier ingest row
    # was removed with the item, so it is not a no-op) ...
    await c.send(note)
    await run_worker_burst(settings)
    assert await _count(migrated_dsn, "comms.communications", ws) == 1
    # ... and a later deletion (the client's clock) removes it again
    await c.delete(ws, "n1", "communication")
    await run_worker_burst(settings)
    assert await _count(migrated_dsn, "comms.communications", ws) == 0
    statuses = [s for s, _ in await _ledger(migrated_dsn, ws, "n1")]
    assert statuses == ["done", "done"], statuses  # the two deletions; no ingest rows left


async def test_an_ingest_recorded_before_a_deletion_and_run_after_it_is_skipped(
    settings_factory: Any, migrated_dsn: str, fake_openai: Any
) -> None:
    settings = settings_factory()
    c = Connector(settings, migrated_dsn)
    ws = await new_workspace(migrated_dsn)
    older = communication(ws, "late", "Draft terms for the bridge round.")
    [job] = await c.send(older)
    await c.drop_queue()  # the ingest waits (the ledger holds it as queued)
    await c.delete(ws, "late", "communication")
    await run_worker_burst(settings)  # the deletion runs first
    await c.send(older)  # the connector (or the reconciler) sends the older ingest again
    await run_worker_burst(settings)
    assert await _count(migrated_dsn, "comms.communications", ws) == 0
    rows = await db_fetch(
        migrated_dsn,
        "SELECT id::text, status::text, result FROM ops.ingestion_jobs WHERE workspace_id = $1",
        ws,
    )
    by_id = {r["id"]: (r["status"], json.loads(r["result"])) for r in rows}
    assert by_id[job][0] == "skipped" and "superseded" in by_id[job][1]["reason"], by_id[job]
    # an ingest recorded after the deletion creates the item again
    await c.send(communication(ws, "late", "Final terms for the bridge round."))
    await run_worker_burst(settings)
    assert (
        await db_val(
            migrated_dsn, "SELECT body FROM comms.communications WHERE workspace_id = $1", ws
        )
        == "Final terms for the bridge round."
    )


async def test_a_deletion_that_lands_while_the_ingest_runs_wins(
    settings_factory: Any, migrated_dsn: str, fake_openai: Any
) -> None:
    """The ingest is waiting on its embedding request when the deletion arrives and runs:
    the ingest then reaches its write and is skipped, nothing is stored."""
    # the ingest keeps its queue slot while it waits (no handoff), so the same burst of
    # the worker picks the deletion up meanwhile
    settings = settings_factory(handoff_max_rows=0)
    c = Connector(settings, migrated_dsn)
    ws = await new_workspace(migrated_dsn)
    fake_openai.configure(latency_ms=1500)
    [job] = await c.send(communication(ws, "racing", "Board pack for Thursday."))
    burst = asyncio.create_task(run_worker_burst(settings))
    for _ in range(200):
        status = await db_val(
            migrated_dsn, "SELECT status::text FROM ops.ingestion_jobs WHERE id = $1::uuid", job
        )
        if status == "running":
            break
        await asyncio.sleep(0.02)
    assert status == "running"
    deletion_job = await c.delete(ws, "racing", "communication")
    for _ in range(200):  # the deletion is done while the ingest still waits
        status = await db_val(
            migrated_dsn,
            "SELECT status::text FROM ops.ingestion_jobs WHERE id = $1::uuid",
            deletion_job,
        )
        if status == "done":
            break
        await asyncio.sleep(0.02)
    assert status == "done"
    assert (
        await db_val(
            migrated_dsn, "SELECT status::text FROM ops.ingestion_jobs WHERE id = $1::uuid", job
        )
        == "running"
    )
    await burst
    await run_worker_burst(settings)
    assert await _count(migrated_dsn, "comms.communications", ws) == 0
    statuses = dict(
        (r["id"], r["status"])
        for r in await db_fetch(
            migrated_dsn,
            "SELECT id::text, status::text FROM ops.ingestion_jobs WHERE workspace_id = $1",
            ws,
        )
    )
    assert statuses == {job: "skipped", deletion_job: "done"}, statuses
