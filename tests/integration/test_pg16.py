"""PostgreSQL 16.2 + pgvector 0.6.2 (the ``pgserver`` wheel), a server older than ours:
no ``MAINTAIN`` privilege, no ``pg_stat_statements``, no ``pgcrypto``, no ``halfvec``.

The migrations, the worker, search and maintenance must all work there. Maintenance
used to fail outright (``unrecognized privilege type: "MAINTAIN"``); now ownership
decides what it may ANALYZE / REINDEX, and what it leaves out is in the report.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from tests.conftest import run_sql
from tests.support.harness import (
    communication,
    db_fetch,
    db_val,
    make_settings,
    media,
    new_workspace,
    run_worker_burst,
    transcript,
)
from tests.support.openai_server import OpenAIServer
from worker import client
from worker.core.settings import REPO_ROOT, Settings
from worker.db.migrate import Migrator
from worker.db.pool import create_pool
from worker.db.search import search
from worker.maintenance import reindex as reindex_mod
from worker.maintenance import run_maintenance
from worker.servers.embedded import EmbeddedPostgres

pytestmark = pytest.mark.pg16

OWNER = "maint16_owner"
TURNS = [
    ("Dana", 0, 6000, "The warehouse lease renewal is due at the end of March."),
    ("Eli", 6000, 12000, "Legal wants a five year term with an exit clause after two."),
]
MEDIA_TEXT = "Walkthrough of the quarterly cash forecast and the hiring plan."


def _sync(coro: Any) -> Any:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module")
def db16(pg16: EmbeddedPostgres) -> Iterator[str]:
    """A database migrated by the runner as the superuser (twice: the second is a no-op)."""
    name = f"cos16_{uuid.uuid4().hex[:8]}"
    run_sql(pg16.dsn(), f'CREATE DATABASE "{name}"')
    dsn = pg16.dsn(name)
    first = _sync(Migrator(dsn).up())
    second = _sync(Migrator(dsn).up())
    assert first and second == [], (first, second)
    yield dsn
    run_sql(pg16.dsn(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def ingested(db16: str, redis_server: Any, openai_server: OpenAIServer) -> tuple[Settings, Any]:
    """Two messages, a transcript and a video ingested by the real worker; then ANALYZE."""
    openai_server.configure(latency_ms=0, tpm_limit=None, rpm_limit=None)
    settings = make_settings(db16, redis_server.url, openai_server.base_url)

    async def go() -> Any:
        ws = await new_workspace(db16, "pg16")
        payloads = [
            communication(ws, "m1", "Can we sign the lease renewal by Friday?"),
            communication(ws, "m2", "Friday is fine once legal has read it."),
            transcript(ws, "call-1", TURNS),
            media(ws, "video-1", [(0, 8000, MEDIA_TEXT)]),
        ]
        redis = await client.connect(settings.redis_url)
        try:
            for payload in payloads:
                await client.enqueue(redis, payload, settings=settings)
        finally:
            await redis.aclose()
        await run_worker_burst(settings)
        conn = await asyncpg.connect(db16)
        try:
            await conn.execute("ANALYZE")  # counters and reltuples for the policies
        finally:
            await conn.close()
        return ws

    return settings, _sync(go())


async def test_migrations_apply_on_16_without_optional_extensions(db16: str) -> None:
    states = await Migrator(db16).status()
    assert states and {s.state for s in states} == {"applied"}
    conn = await asyncpg.connect(db16)
    try:
        assert (await conn.fetchval("SHOW server_version")).startswith("16.")
        extensions = dict(await conn.fetch("SELECT extname, extversion FROM pg_extension"))
    finally:
        await conn.close()
    assert extensions["vector"] == "0.6.2"
    assert "pg_stat_statements" not in extensions and "pgcrypto" not in extensions


async def test_the_worker_ingests_and_search_finds_it_on_16(
    ingested: tuple[Settings, Any], db16: str
) -> None:
    settings, ws = ingested
    jobs = await db_fetch(
        db16, "SELECT status::text FROM ops.ingestion_jobs WHERE workspace_id = $1", ws
    )
    assert [j[0] for j in jobs] == ["done"] * 4
    assert (
        await db_val(db16, "SELECT count(*) FROM comms.communications WHERE embedding IS NOT NULL")
        == 2
    )
    chunks = await db_val(
        db16, "SELECT count(*) FROM meetings.transcript_chunks WHERE workspace_id = $1", ws
    )
    assert chunks >= 1
    pool = await create_pool(settings, db16, min_size=1, max_size=1)
    try:
        hits = await search(settings, pool, ws, MEDIA_TEXT, limit=3)
    finally:
        await pool.close()
    assert hits[0]["kind"] == "media" and hits[0]["content"] == MEDIA_TEXT
    assert hits[0]["distance"] < 0.01


def test_maintenance_cli_succeeds_on_16_and_says_what_it_left_out(
    db16: str, ingested: tuple[Settings, Any]
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL")
    }
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "maintenance", "--json", "--force-analyze"],
        cwd=REPO_ROOT,
        env={**env, "DATABASE_URL": db16},
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)  # the whole of stdout: JSON and nothing else
    assert report["status"] == "succeeded", report
    server = report["server"]
    assert server["server_version_num"] // 10000 == 16 and server["superuser"]
    assert server["maintain_privilege"] is False
    assert server["pgvector_version"] == "0.6.2"
    assert server["pgvector_halfvec"] is False
    assert server["pgvector_iterative_index_scans"] is False
    assert server["pg_stat_statements_available"] is False
    # As superuser ownership never stands in the way: everything due was analyzed.
    analyzed = [a for a in report["actions"] if a["kind"] == "analyze"]
    assert len(analyzed) > 20 and {a["status"] for a in analyzed} == {"done"}
    assert not [a for a in report["actions"] if a["status"] == "failed"]
    # The slow-query part explains itself instead of failing.
    source = report["slow_query_source"]
    assert source["available"] is False and source["reason"] == "extension_missing"
    assert "has no pg_stat_statements" in source["explanation"]
    assert "contrib" in source["hint"]
    [slow] = [a for a in report["actions"] if a["kind"] == "slow_queries"]
    assert slow["status"] == "skipped" and slow["reason"] == "extension_missing"
    assert any("no slow-query report" in w for w in report["warnings"])


async def test_ownership_decides_on_16_for_a_role_that_is_not_superuser(
    pg16: EmbeddedPostgres,
    db16: str,
    ingested: tuple[Settings, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = await asyncpg.connect(db16)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", OWNER):
            await admin.execute(f"CREATE ROLE {OWNER} LOGIN")
        # The bookkeeping connection runs as service_role; its grants cover ops.*.
        await admin.execute(f"GRANT service_role TO {OWNER}")
        await admin.execute("CREATE TABLE IF NOT EXISTS work.maint16_mine (id int)")
        await admin.execute("INSERT INTO work.maint16_mine SELECT generate_series(1, 10)")
        for table in ("work.maint16_mine", "core.contacts"):
            await admin.execute(f"ALTER TABLE {table} OWNER TO {OWNER}")
        # Every vector index "last built" with 1 row: each one with rows is due (growth).
        await admin.execute(
            "INSERT INTO ops.index_builds (index_name, table_name, rows_at_build, built_at, "
            "reason) SELECT n.nspname || '.' || c.relname, '', 1, now(), 'test' "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_am am ON am.oid = c.relam WHERE am.amname = 'hnsw' "
            "ON CONFLICT (index_name) DO UPDATE SET rows_at_build = 1"
        )
    finally:
        await admin.close()
    monkeypatch.setattr(reindex_mod, "MIN_ROWS_FOR_REBUILD", 1)
    # growth is the trigger here (the recall probe would find these small indexes healthy)
    settings = Settings(maintenance_work_mem="64MB", reindex_max_per_run=5, reindex_recall_target=0)
    owner_dsn = pg16.dsn(db16.rsplit("/", 1)[1], user=OWNER)

    with capture_logs() as logs:
        report = await run_maintenance(settings, owner_dsn, force_analyze=True)

    assert report.status == "succeeded", report.to_dict()
    assert report.server["superuser"] is False and report.server["maintain_privilege"] is False
    done = {a.target for a in report.actions_of("analyze", "done")}
    assert done == {"core.contacts", "work.maint16_mine"}
    skipped = report.actions_of("analyze", "skipped")
    assert len(skipped) > 20 and {a.reason for a in skipped} == {"not_owner"}
    assert "has no MAINTAIN privilege (17+)" in skipped[0].details["why"]
    assert "PostgreSQL 16." in skipped[0].details["why"]
    rebuilt = report.actions_of("reindex", "done")
    assert [a.target for a in rebuilt] == ["core.idx_contacts_embedding"]
    not_owned = {a.target: a.reason for a in report.actions_of("reindex", "skipped")}
    due = {i["index"] for i in report.indexes if i["decision"] == "rebuild"}
    assert due == {"core.idx_contacts_embedding", *not_owned}  # none deferred by the cap
    assert "comms.idx_comms_embedding" in not_owned
    assert set(not_owned.values()) == {"not_owner"}
    access = {i["index"]: i["access"] for i in report.indexes}
    assert access["core.idx_contacts_embedding"] == "allowed"
    assert access["meetings.idx_chunks_embedding"] == "not_owner"
    assert any("has no MAINTAIN privilege" in w for w in report.warnings)
    logged = [e for e in logs if e["event"] == "maintenance.analyze" and e["status"] == "skipped"]
    assert logged and all(e["reason"] == "not_owner" and e["why"] for e in logged)
