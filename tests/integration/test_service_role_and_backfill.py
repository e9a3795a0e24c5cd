"""The worker as a non-superuser login role, embed_pending, content_url, health check."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import pytest
from arq.worker import Worker, async_check_health

from tests.support.harness import (
    communication,
    db_fetch,
    new_workspace,
    run_worker_burst,
)
from worker import client
from worker.client import redis_settings_for
from worker.core.settings import LOCAL_MODEL_NAME
from worker.queue.app import worker_options


async def test_whole_pipeline_as_login_role_with_only_service_role(
    settings_factory, migrated_dsn: str, pg: Any
) -> None:
    role = f"cos_app_{uuid.uuid4().hex[:6]}"
    conn = await asyncpg.connect(migrated_dsn)
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOINHERIT")
        await conn.execute(f"GRANT service_role TO {role}")
        is_super = await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = $1", role)
    finally:
        await conn.close()
    assert is_super is False
    app_dsn = migrated_dsn.replace("postgres@", f"{role}@")
    ws = await new_workspace(migrated_dsn)
    settings = settings_factory(app_dsn)
    redis = await client.connect(settings.redis_url)
    await client.enqueue(
        redis, communication(ws, "role-1", "written by the service role"), settings=settings
    )
    await redis.aclose()
    await run_worker_burst(settings)
    rows = await db_fetch(
        migrated_dsn, "SELECT status::text FROM ops.ingestion_jobs WHERE workspace_id = $1", ws
    )
    assert [r[0] for r in rows] == ["done"]
    # without the role switch the same login cannot see or write tenant rows (RLS, grants)
    plain = await asyncpg.connect(app_dsn)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await plain.fetch("SELECT * FROM comms.communications")
    finally:
        await plain.close()


async def test_embed_pending_fills_contacts_and_insights_and_follows_model_changes(
    settings_factory, migrated_dsn: str, fake_openai: Any
) -> None:
    settings = settings_factory(embed_pending_batch=2)
    ws = await new_workspace(migrated_dsn)
    conn = await asyncpg.connect(migrated_dsn)
    try:
        for i in range(3):
            await conn.execute(
                "INSERT INTO intel.insights (workspace_id, insight_type, title, body)"
                " VALUES ($1, 'risk', $2, 'body')",
                ws,
                f"insight {i}",
            )
    finally:
        await conn.close()
    redis = await client.connect(settings.redis_url)
    await client.enqueue(redis, communication(ws, "c1", "hello"), settings=settings)
    await client.enqueue_embed_pending(redis, settings)
    await redis.aclose()
    await run_worker_burst(settings)
    await run_worker_burst(settings)  # embed_pending may have run before ingest finished
    redis = await client.connect(settings.redis_url)
    await client.enqueue_embed_pending(redis, settings)
    await redis.aclose()
    await run_worker_burst(settings)
    contacts = await db_fetch(
        migrated_dsn,
        "SELECT embedding_model, embedding FROM core.contacts WHERE workspace_id = $1",
        ws,
    )
    insights = await db_fetch(
        migrated_dsn, "SELECT embedding_model FROM intel.insights WHERE workspace_id = $1", ws
    )
    assert len(contacts) == 2 and len(insights) == 3
    assert {c[0] for c in contacts} == {"text-embedding-3-small"}
    assert {i[0] for i in insights} == {"text-embedding-3-small"}

    # a model change: the same job re-embeds everything with the new model
    local = settings_factory(embedding_provider="local", embed_pending_batch=2)
    redis = await client.connect(local.redis_url)
    await client.enqueue_embed_pending(redis, local)
    await redis.aclose()
    await run_worker_burst(local)
    models = await db_fetch(
        migrated_dsn,
        "SELECT embedding_model FROM core.contacts WHERE "
        "workspace_id = $1 UNION ALL SELECT embedding_model FROM intel.insights "
        "WHERE workspace_id = $1",
        ws,
    )
    assert {m[0] for m in models} == {LOCAL_MODEL_NAME}


VTT = """WEBVTT

00:00:00.000 --> 00:00:04.000
<v Dana>We should ship the onboarding redesign next sprint.

00:00:04.000 --> 00:00:09.500
<v Eli>Agreed, but the analytics events need QA first.
"""


@pytest.fixture
def vtt_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = VTT.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/vtt; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/call.vtt"
    server.shutdown()


async def test_transcript_from_content_url_keeps_speakers_and_times(
    settings_factory, migrated_dsn: str, vtt_server: str
) -> None:
    settings = settings_factory(fetch_allow_private=True)
    ws = await new_workspace(migrated_dsn)
    payload = {
        "kind": "transcript",
        "workspace_id": str(ws),
        "source": "meet",
        "external_id": "vtt-1",
        "meeting": {"title": "Planning"},
        "content_url": vtt_server,
    }
    redis = await client.connect(settings.redis_url)
    await client.enqueue(redis, payload, settings=settings)
    await redis.aclose()
    await run_worker_burst(settings)
    rows = await db_fetch(
        migrated_dsn,
        "SELECT speakers, start_ms, end_ms, content FROM "
        "meetings.transcript_chunks WHERE workspace_id = $1",
        ws,
    )
    assert len(rows) == 1
    assert set(rows[0]["speakers"]) == {"Dana", "Eli"}
    assert (rows[0]["start_ms"], rows[0]["end_ms"]) == (0, 9500)
    fmt = await db_fetch(
        migrated_dsn, "SELECT format FROM meetings.transcripts WHERE workspace_id=$1", ws
    )
    assert fmt[0][0] == "vtt"


async def test_content_url_to_loopback_is_refused_by_default(
    settings_factory, migrated_dsn: str, vtt_server: str
) -> None:
    settings = settings_factory(fetch_allow_private=False)
    ws = await new_workspace(migrated_dsn)
    payload = {
        "kind": "transcript",
        "workspace_id": str(ws),
        "source": "meet",
        "external_id": "vtt-2",
        "content_url": vtt_server,
    }
    redis = await client.connect(settings.redis_url)
    await client.enqueue(redis, payload, settings=settings)
    await redis.aclose()
    await run_worker_burst(settings)
    rows = await db_fetch(
        migrated_dsn,
        "SELECT status::text, attempts, error_field, last_error "
        "FROM ops.ingestion_jobs WHERE workspace_id = $1",
        ws,
    )
    assert rows[0]["status"] == "failed" and rows[0]["attempts"] == 1
    assert rows[0]["error_field"] == "content_url"
    assert "refused" in rows[0]["last_error"]


async def test_arq_health_check_is_written(settings_factory) -> None:
    settings = settings_factory()
    options = worker_options(settings)
    worker = Worker(
        **options,
        redis_settings=redis_settings_for(settings.redis_url),
        handle_signals=False,
        ctx={"settings": settings},
    )
    task = asyncio.create_task(worker.main())
    try:
        code = 1
        for _ in range(100):
            # `arq --check worker.main.WorkerSettings` reads the class's health_check_key:
            # one per WORKER_NAME (the host name by default), not arq's one per queue.
            code = await async_check_health(
                redis_settings_for(settings.redis_url),
                health_check_key=options["health_check_key"],
                queue_name=settings.queue_name,
            )
            if code == 0:
                break
            await asyncio.sleep(0.1)
        assert code == 0  # what `arq --check worker.main.WorkerSettings` reports
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.close()
