"""``cos-worker erase``: a workspace, or one source of it, gone from PostgreSQL and Redis
(real PostgreSQL, Redis, arq worker), everything else untouched; an erasure cut midway
finishes when run again. What remains is the event store, holding ids and counts only."""

from __future__ import annotations

import base64
import json
from email.message import EmailMessage
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from tests.support import documents
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
from worker.db.erase import Scope
from worker.db.pool import create_pool
from worker.erasure import erase
from worker.queue import keys
from worker.queue.serialization import loads

SECRET = "Hesperidian Quorum Tallow"  # in every erased item's subject / text
SHARED = "pat.shared@crossover.example"  # a contact both sources of workspace A know
GMAIL_ONLY = "gail.only@gmailside.example"
ATTACHMENT = "hesperidian-terms.pdf"
SCHEMAS = ("core", "ops", "comms", "meetings", "media", "work", "intel")


def raw_email(ws: UUID, i: int, tag: str) -> dict[str, Any]:
    msg = EmailMessage()
    msg["From"] = f"Gail Only <{GMAIL_ONLY}>"
    msg["To"] = f"Pat Shared <{SHARED}>"
    msg["Subject"] = f"{SECRET} {tag} mail {i}"
    msg["Date"] = "Tue, 01 Dec 2026 09:30:00 +0100"
    msg["Message-ID"] = f"<m{i}.{tag}@mail.gmail.com>"
    msg.set_content(f"{SECRET}: the terms are attached ({tag}).")
    pdf = documents.pdf([f"{SECRET} terms for {tag}, page one."])
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=ATTACHMENT)
    return {
        "kind": "email",
        "workspace_id": str(ws),
        "source": "gmail",
        "external_id": f"<m{i}.{tag}@mail.gmail.com>",
        "raw": base64.urlsafe_b64encode(msg.as_bytes()).decode().rstrip("="),
    }


def items(ws: UUID, tag: str, n: int = 3) -> list[dict[str, Any]]:
    """Every kind, two sources of communications that share a contact."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        out.append(
            communication(
                ws,
                f"<g{i}.{tag}@mail.gmail.com>",
                f"{SECRET} gmail body {i} {tag}",
                subject=f"{SECRET} {tag}",
                thread_key=f"gthread-{tag}",
                sender={"name": "Gail Only", "address": GMAIL_ONLY},
                recipients=[{"name": "Pat Shared", "address": SHARED, "role": "to"}],
            )
        )
        out.append(
            communication(
                ws,
                f"s{i}-{tag}",
                f"slack message {i} {tag}",
                source="slack",
                channel="chat",
                subject=None,
                thread_key=f"sthread-{tag}",
                sender={"name": "Pat Shared", "address": SHARED},
                recipients=[],
            )
        )
    out.append(raw_email(ws, 0, tag))
    out.append(
        transcript(ws, f"call-{tag}", [("Alice", 0, 4000, f"{SECRET} call {tag}.")], source="gmail")
    )
    out.append(media(ws, f"video-{tag}", [(0, 3000, f"{SECRET} video {tag}")], source="gmail"))
    out.append(transcript(ws, f"zoom-{tag}", [("Bob", 0, 4000, f"zoom call {tag}.")]))
    return out


async def tenant_tables(dsn: str) -> list[str]:
    rows = await db_fetch(
        dsn,
        "SELECT c.table_schema || '.' || c.table_name AS t FROM information_schema.columns c "
        "JOIN information_schema.tables x ON x.table_schema = c.table_schema "
        "AND x.table_name = c.table_name AND x.table_type = 'BASE TABLE' "
        "WHERE c.column_name = 'workspace_id' AND c.table_schema = ANY($1::text[]) ORDER BY 1",
        list(SCHEMAS),
    )
    return [r["t"] for r in rows]


async def all_tables(dsn: str) -> list[str]:
    rows = await db_fetch(
        dsn,
        "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' AND table_schema = ANY($1::text[]) ORDER BY 1",
        list(SCHEMAS),
    )
    return [r["t"] for r in rows]


async def counts(dsn: str, ws: UUID) -> dict[str, int]:
    """Rows per tenant table (events aside) for ``ws``."""
    return {
        t: await db_val(dsn, f"SELECT count(*) FROM {t} WHERE workspace_id = $1", ws)
        for t in await tenant_tables(dsn)
        if t != "ops.events"
    }


async def text_hits(dsn: str, needle: str) -> dict[str, int]:
    """Rows of every domain table (events aside) whose text holds ``needle``."""
    hits = {}
    for t in await all_tables(dsn):
        if t == "ops.events":
            continue
        n = await db_val(
            dsn, f"SELECT count(*) FROM {t} x WHERE x::text ILIKE '%' || $1 || '%'", needle
        )
        if n:
            hits[t] = n
    return hits


async def events_text(dsn: str, ws: UUID) -> str:
    rows = await db_fetch(
        dsn,
        "SELECT payload::text || metadata::text AS t FROM ops.events WHERE workspace_id = $1",
        ws,
    )
    return "\n".join(r["t"] for r in rows)


async def queued_payloads(settings: Any) -> list[dict[str, Any]]:
    redis = await client.connect(settings.redis_url)
    try:
        out = []
        for arq_id in await redis.zrange(settings.queue_name, 0, -1):
            raw = await redis.get(keys.JOB_KEY_PREFIX + arq_id.decode())
            job = loads(raw)
            if job["f"] == keys.INGEST_PAGE:
                out += [dict(i) for i in job["a"][0]["items"]]
            else:
                out.append(dict(job["a"][0]))
        return out
    finally:
        await redis.aclose()


async def ingest_and_queue(settings: Any, dsn: str) -> tuple[UUID, UUID]:
    """Two workspaces ingested through the worker, then more of both queued (not run):
    single jobs, and a page job mixing both workspaces and both sources of A."""
    a, b = await new_workspace(dsn), await new_workspace(dsn)
    pool = await create_pool(settings, dsn, min_size=1, max_size=2)
    redis = await client.connect(settings.redis_url)
    try:
        conn = await asyncpg.connect(dsn)
        for ws in (a, b):
            await conn.execute(
                "INSERT INTO core.integrations (workspace_id, provider, account) "
                "VALUES ($1, 'gmail', $2), ($1, 'slack', 'team')",
                ws,
                GMAIL_ONLY,
            )
        await conn.close()
        for ws, tag in ((a, "A"), (b, "B")):
            results = await client.enqueue_many(redis, items(ws, tag), db=pool, settings=settings)
            assert all(isinstance(r, str) for r in results), results
        await run_worker_burst(settings)
        later = [
            communication(a, "<late.A@mail.gmail.com>", f"{SECRET} late", subject=SECRET),
            communication(a, "late-slack-A", "late slack", source="slack", channel="chat"),
            communication(b, "<late.B@mail.gmail.com>", "late B"),
            raw_email(a, 9, "A"),
        ]
        assert all(
            isinstance(r, str)
            for r in await client.enqueue_many(redis, later, db=pool, settings=settings)
        )
        await client.enqueue(
            redis,
            communication(a, "<single.A@mail.gmail.com>", f"{SECRET} single", subject=SECRET),
            settings=settings,
        )
    finally:
        await redis.aclose()
        await pool.close()
    return a, b


async def test_source_erasure(settings_factory, migrated_dsn, fake_openai) -> None:
    settings = settings_factory(erase_batch_size=3)
    a, b = await ingest_and_queue(settings, migrated_dsn)
    assert await db_val(
        migrated_dsn, "SELECT count(*) FROM comms.attachments WHERE workspace_id = $1", a
    )
    before_b = await counts(migrated_dsn, b)
    slack_before = await db_fetch(
        migrated_dsn,
        "SELECT id, body FROM comms.communications WHERE workspace_id = $1 AND source = 'slack' "
        "ORDER BY id",
        a,
    )

    report = await erase(settings, migrated_dsn, settings.redis_url, Scope(a, "gmail"))
    assert report.complete, report.to_dict()
    assert report.redis.jobs >= 1 and report.redis.items >= 2, report.to_dict()
    assert report.deleted["comms.communications"] >= 4 and report.deleted["media.assets"] >= 2

    # Nothing of A's gmail source is left in any table; its contact-only address is gone,
    # the contact slack still references stays; slack's rows and workspace B are untouched.
    for t in (
        "comms.communications",
        "comms.threads",
        "media.assets",
        "meetings.meetings",
        "meetings.transcripts",
        "ops.ingestion_jobs",
    ):
        assert not await db_val(
            migrated_dsn,
            f"SELECT count(*) FROM {t} WHERE workspace_id = $1 AND source = 'gmail'",
            a,
        ), t
    # (every asset of A was gmail's: the video, the attachments' documents)
    for t in ("comms.attachments", "media.media_chunks", "media.asset_links"):
        assert not await db_val(
            migrated_dsn, f"SELECT count(*) FROM {t} WHERE workspace_id = $1", a
        ), t
    assert await db_val(
        migrated_dsn, "SELECT count(*) FROM meetings.transcript_chunks WHERE workspace_id = $1", a
    )  # zoom's
    addresses = {
        r["primary_address"]
        for r in await db_fetch(
            migrated_dsn, "SELECT primary_address FROM core.contacts WHERE workspace_id = $1", a
        )
    }
    assert SHARED in addresses and GMAIL_ONLY not in addresses
    assert not await db_val(
        migrated_dsn,
        "SELECT count(*) FROM core.integrations WHERE workspace_id = $1 AND provider = 'gmail'",
        a,
    )
    assert (
        await db_fetch(
            migrated_dsn,
            "SELECT id, body FROM comms.communications WHERE workspace_id = $1 AND source = 'slack' "
            "ORDER BY id",
            a,
        )
        == slack_before
    )
    threads = await db_fetch(
        migrated_dsn,
        "SELECT t.message_count, (SELECT count(*) FROM comms.communications c "
        "WHERE c.thread_id = t.id) AS n FROM comms.threads t WHERE t.workspace_id = $1",
        a,
    )
    assert threads and all(t["message_count"] == t["n"] for t in threads)
    assert await counts(migrated_dsn, b) == before_b
    hits = await text_hits(migrated_dsn, f"{SECRET} A")
    assert hits == {}, hits
    # Redis: A's gmail items left the queue; the page job kept A's slack item and B's.
    queued = await queued_payloads(settings)
    assert not [p for p in queued if p["workspace_id"] == str(a) and p["source"] == "gmail"]
    assert {(p["workspace_id"], p["source"]) for p in queued} == {
        (str(a), "slack"),
        (str(b), "gmail"),
    }
    # The event store keeps its history, without the erased text, and says what was done.
    text = await events_text(migrated_dsn, a)
    assert SECRET not in text and GMAIL_ONLY not in text and "mail.gmail.com" not in text
    [erased] = await db_fetch(
        migrated_dsn,
        "SELECT payload FROM ops.events WHERE workspace_id = $1 AND event_type = 'scope.erased'",
        a,
    )
    payload = json.loads(erased["payload"])
    assert payload["scope"] == "source" and payload["source"] == "gmail"
    assert payload["deleted"]["comms.communications"] == report.deleted["comms.communications"]


async def test_workspace_erasure_interrupted_then_resumed(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    settings = settings_factory(erase_batch_size=2)
    a, b = await ingest_and_queue(settings, migrated_dsn)
    before_b = await counts(migrated_dsn, b)
    assert (await counts(migrated_dsn, a))["media.media_chunks"] > 0

    batches = 0

    async def crash_after_the_first_batches(table: str, n: int) -> None:
        nonlocal batches
        batches += 1
        if batches == 4:
            raise RuntimeError("forced stop")

    with pytest.raises(RuntimeError, match="forced stop"):
        await erase(
            settings,
            migrated_dsn,
            settings.redis_url,
            Scope(a),
            after_batch=crash_after_the_first_batches,
        )
    partial = await counts(migrated_dsn, a)
    assert any(partial.values()), "the stop came before the end"
    assert await db_val(migrated_dsn, "SELECT count(*) FROM core.workspaces WHERE id = $1", a)
    assert not await db_val(
        migrated_dsn,
        "SELECT count(*) FROM ops.events WHERE workspace_id = $1 AND event_type = 'scope.erased'",
        a,
    )

    report = await erase(settings, migrated_dsn, settings.redis_url, Scope(a))
    assert report.complete and report.deleted["core.workspaces"] == 1, report.to_dict()
    # Every table of every domain schema: nothing of A outside ops.events, no text of it.
    assert {t: n for t, n in (await counts(migrated_dsn, a)).items() if n} == {}
    assert not await db_val(migrated_dsn, "SELECT count(*) FROM core.workspaces WHERE id = $1", a)
    for needle in (f"{SECRET} A", str(a), "<m0.A@mail.gmail.com>"):
        hits = await text_hits(migrated_dsn, needle)
        assert hits == {}, (needle, hits)
    text = await events_text(migrated_dsn, a)
    assert SECRET not in text and GMAIL_ONLY not in text and ATTACHMENT not in text
    assert await counts(migrated_dsn, b) == before_b
    queued = await queued_payloads(settings)
    assert queued and all(p["workspace_id"] == str(b) for p in queued)
    # B's queued jobs still run
    await run_worker_burst(settings)
    assert (
        await db_val(
            migrated_dsn,
            "SELECT status::text FROM ops.ingestion_jobs WHERE workspace_id = $1 "
            "AND external_id = '<late.B@mail.gmail.com>'",
            b,
        )
        == "done"
    )
