"""Schema migrations 001/002 against a real PostgreSQL 18 + pgvector.

The seed design doc's verification queries 1-7 are acceptance tests here, plus the
structural rules the worker relies on: enums, indexes, views, triggers, tenancy FKs,
the append-only event store, composite FKs across workspaces, idempotent re-runs and
a clean up -> down -> up round trip.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from tests.conftest import run_sql

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = REPO / "migrations"
UP = sorted(MIGRATIONS.glob("0*.sql"))
DOWN = [MIGRATIONS / "rollback" / f"{f.stem}.down.sql" for f in reversed(UP)]
SCHEMAS = ["comms", "core", "intel", "media", "meetings", "ops", "work"]

TABLES = sorted(
    [
        ("core", "workspaces"),
        ("core", "members"),
        ("core", "founders"),
        ("core", "contacts"),
        ("core", "integrations"),
        ("ops", "events"),
        ("ops", "ingestion_jobs"),
        ("ops", "maintenance_runs"),
        ("ops", "slow_query_reports"),
        ("ops", "index_builds"),
        ("ops", "sync_cursors"),
        ("ops", "sync_seen"),
        ("comms", "channels"),
        ("comms", "threads"),
        ("comms", "communications"),
        ("comms", "participants"),
        ("comms", "attachments"),
        ("meetings", "meetings"),
        ("meetings", "participants"),
        ("meetings", "transcripts"),
        ("meetings", "transcript_chunks"),
        ("meetings", "action_items"),
        ("media", "assets"),
        ("media", "media_chunks"),
        ("media", "asset_links"),
        ("work", "projects"),
        ("work", "work_items"),
        ("work", "comments"),
        ("intel", "insights"),
        ("intel", "insight_sources"),
        ("intel", "briefings"),
    ]
)
# Tables without a NOT NULL workspace_id FK (documented exceptions in docs/schema.md).
NON_TENANT = {
    ("core", "workspaces"),  # the tenant itself
    ("ops", "events"),  # nullable, no FK: the audit log outlives tenants
    ("ops", "ingestion_jobs"),  # nullable (FK kept) for unattributable failed jobs
    ("ops", "maintenance_runs"),
    ("ops", "slow_query_reports"),
    ("ops", "index_builds"),
}
ENUMS = {
    "core.role_type": ["owner", "admin", "member", "viewer"],
    "core.integration_status": ["active", "paused", "error", "revoked"],
    "ops.job_status": ["queued", "running", "done", "failed", "skipped"],
    "ops.ingestion_kind": ["communication", "transcript", "media"],
    "ops.maintenance_status": ["running", "succeeded", "partial", "failed", "skipped"],
    "comms.channel_type": ["email", "chat", "sms", "voice", "social", "other"],
    "comms.participant_role": ["from", "to", "cc", "bcc", "mention"],
    "meetings.meeting_status": ["scheduled", "in_progress", "completed", "cancelled"],
    "media.asset_kind": ["audio", "video", "image", "document"],
    "work.item_status": ["todo", "in_progress", "blocked", "done", "cancelled"],
    "work.priority": ["low", "medium", "high", "urgent"],
    "intel.insight_type": [
        "summary",
        "action",
        "risk",
        "opportunity",
        "relationship",
        "decision",
        "other",
    ],
}
HNSW = {
    "idx_contacts_embedding": ("core", "contacts"),
    "idx_comms_embedding": ("comms", "communications"),
    "idx_chunks_embedding": ("meetings", "transcript_chunks"),
    "idx_media_chunks_embedding": ("media", "media_chunks"),
    "idx_insights_embedding": ("intel", "insights"),
}
QUANTIZED = {"idx_comms_embedding", "idx_chunks_embedding", "idx_media_chunks_embedding"}


def apply(pg, dsn: str, *files: Path) -> None:
    for f in files:
        subprocess.run(
            [str(pg.psql_path()), dsn, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(f)],
            check=True,
            capture_output=True,
        )


async def _rollback(conn, coro_fn):
    tr = conn.transaction()
    await tr.start()
    try:
        return await coro_fn()
    finally:
        await tr.rollback()


@pytest.fixture(scope="module")
def schema_dsn(pg):
    """One database with 001 + 002 applied by psql, shared by the read-only tests."""
    name = f"schema_{uuid.uuid4().hex[:8]}"
    run_sql(pg.dsn(), f'CREATE DATABASE "{name}"')
    dsn = pg.dsn(name)
    apply(pg, dsn, *UP)
    yield dsn
    run_sql(pg.dsn(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(loop_scope="session")
async def conn(schema_dsn):
    c = await asyncpg.connect(schema_dsn)
    try:
        yield c
    finally:
        await c.close()


# --------------------------------------------------------------------------------------
# Seed verification queries 1-7
# --------------------------------------------------------------------------------------


async def test_q1_seven_schemas(conn):
    rows = await conn.fetch(
        """SELECT schema_name FROM information_schema.schemata
           WHERE schema_name IN ('core', 'ops', 'comms', 'meetings', 'media', 'work', 'intel')
           ORDER BY schema_name"""
    )
    assert [r[0] for r in rows] == SCHEMAS


async def test_q2_thirty_tables(conn):
    rows = await conn.fetch(
        """SELECT schemaname, tablename FROM pg_tables
           WHERE schemaname IN ('core', 'ops', 'comms', 'meetings', 'media', 'work', 'intel')
           ORDER BY schemaname, tablename"""
    )
    assert [tuple(r) for r in rows] == TABLES
    assert len(rows) == 31  # the seed's 30, and 005's ops.sync_seen


async def test_q3_pgvector(conn):
    rows = await conn.fetch("SELECT * FROM pg_extension WHERE extname = 'vector'")
    assert len(rows) == 1


async def test_q4_five_vector_columns(conn):
    rows = await conn.fetch(
        """SELECT table_schema, table_name, column_name, udt_name
           FROM information_schema.columns WHERE udt_name = 'vector'
           ORDER BY table_schema, table_name"""
    )
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("comms", "communications", "embedding"),
        ("core", "contacts", "embedding"),
        ("intel", "insights", "embedding"),
        ("media", "media_chunks", "embedding"),
        ("meetings", "transcript_chunks", "embedding"),
    ]
    dims = await conn.fetch(
        """SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
           JOIN pg_type t ON t.oid = a.atttypid
           WHERE t.typname = 'vector' AND a.attnum > 0 AND NOT a.attisdropped
             AND a.attrelid IN (SELECT oid FROM pg_class WHERE relkind = 'r')"""
    )
    assert sorted(r[0] for r in dims) == ["vector(1536)"] * 5


async def test_q5_rls_on_all_thirty(conn):
    rows = await conn.fetch(
        """SELECT schemaname, tablename, rowsecurity FROM pg_tables
           WHERE schemaname IN ('core', 'ops', 'comms', 'meetings', 'media', 'work', 'intel')
             AND rowsecurity = true
           ORDER BY schemaname, tablename"""
    )
    assert len(rows) == 31  # the seed's 30, and 005's ops.sync_seen
    forced = await conn.fetchval(
        """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = ANY($1::text[]) AND c.relforcerowsecurity""",
        SCHEMAS,
    )
    assert forced == 0


async def test_q6_indexes(conn):
    rows = await conn.fetch(
        """SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes
           WHERE schemaname IN ('core', 'ops', 'comms', 'meetings', 'media', 'work', 'intel')
           ORDER BY schemaname, tablename"""
    )
    assert len(rows) >= 80
    by_name = {r["indexname"]: r for r in rows}
    for name, (schema, table) in HNSW.items():
        r = by_name[name]
        assert (r["schemaname"], r["tablename"]) == (schema, table)
        if name in QUANTIZED:  # 007: binary-quantized IVFFlat (pgvector >= 0.8: this server)
            assert (
                "USING ivfflat (((binary_quantize(embedding))::bit(1536)) bit_hamming_ops)"
                in (r["indexdef"])
            )
            assert "lists='1'" in r["indexdef"]  # an empty table: one list (007)
        else:
            assert "USING hnsw (embedding vector_cosine_ops)" in r["indexdef"]
            assert "m='16'" in r["indexdef"] and "ef_construction='64'" in r["indexdef"]
    assert sum("USING hnsw" in r["indexdef"] for r in rows) == 2
    assert sum("USING ivfflat" in r["indexdef"] for r in rows) == 3
    defs = {r["indexname"]: r["indexdef"] for r in rows}
    assert "USING gin (body_tsv)" in defs["idx_comms_body_tsv"]
    # 006: on the stored content_tsv column (a generated to_tsvector of content)
    assert "USING gin (content_tsv)" in defs["idx_chunks_content_fts"]
    assert "USING gin (content_tsv)" in defs["idx_media_chunks_content_fts"]
    assert "USING gin (addresses)" in defs["idx_contacts_addresses"]
    assert "USING gin (speakers)" in defs["idx_chunks_speakers"]
    assert "USING gin (payload)" in defs["idx_events_payload"]


async def test_q7_migration_tracking(conn):
    rows = await conn.fetch("SELECT * FROM public.schema_migrations ORDER BY version")
    assert [(r["version"], r["name"]) for r in rows] == [
        ("001", "001_initial_schema"),
        ("002", "002_rls_policies"),
        ("003", "003_helpers_out_of_auth"),
        ("004", "004_document_chunks"),
        ("005", "005_sync_seen"),
        ("006", "006_vector_search"),
        ("007", "007_ivfflat_vectors"),
    ]


async def test_runner_applies_every_file(migrated_dsn):
    c = await asyncpg.connect(migrated_dsn)
    try:
        rows = await c.fetch("SELECT version, checksum FROM public.schema_migrations ORDER BY 1")
        assert [r["version"] for r in rows] == ["001", "002", "003", "004", "005", "006", "007"]
        assert await c.fetchval("SELECT count(*) FROM pg_policies") >= 120
    finally:
        await c.close()


# --------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------


async def test_twelve_enums(conn):
    rows = await conn.fetch(
        """SELECT n.nspname || '.' || t.typname AS name,
                  array_agg(e.enumlabel ORDER BY e.enumsortorder) AS labels
           FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           JOIN pg_enum e ON e.enumtypid = t.oid
           WHERE n.nspname = ANY($1::text[])
           GROUP BY 1""",
        SCHEMAS,
    )
    assert {r["name"]: list(r["labels"]) for r in rows} == ENUMS


async def test_three_security_invoker_views(conn):
    rows = await conn.fetch(
        """SELECT n.nspname || '.' || c.relname AS name, c.reloptions
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('v', 'm') AND n.nspname = ANY($1::text[]) ORDER BY 1""",
        SCHEMAS,
    )
    assert [r["name"] for r in rows] == [
        "comms.thread_summaries",
        "intel.workspace_activity",
        "ops.ingestion_status",
    ]
    for r in rows:
        assert "security_invoker=true" in (r["reloptions"] or [])
        await conn.fetch(f"SELECT * FROM {r['name']}")


async def test_helper_functions(conn):
    rows = await conn.fetch(
        """SELECT n.nspname || '.' || p.proname AS name, p.prosecdef, p.proconfig
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = ANY($1::text[]) ORDER BY 1""",
        SCHEMAS,
    )
    assert len(rows) == 7
    assert {r["name"] for r in rows} >= {
        "core.set_updated_at",
        "ops.refuse_event_mutation",
        "ops.ivfflat_lists",  # 007
        "ops.ivfflat_probes",
    }
    for r in rows:
        assert any(c.startswith("search_path=") for c in r["proconfig"] or []), r["name"]
    auth = await conn.fetch(
        """SELECT p.proname, p.prosecdef, p.provolatile::text AS provolatile, p.proconfig
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = $1 AND p.proname IN ('user_workspaces', 'has_workspace_role',
             'is_workspace_admin', 'is_founder', 'get_founder_id')""",
        "authz",
    )
    assert len(auth) == 5
    for r in auth:
        assert r["prosecdef"] and r["provolatile"] == "s"
        assert r["proconfig"] == ['search_path=""']
    # auth accepts CREATE here (plain PostgreSQL): the seed's names, as thin wrappers
    wrappers = await conn.fetch(
        """SELECT p.proname, p.prosecdef, p.proconfig, pg_get_functiondef(p.oid) AS def
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'auth' AND p.proname IN ('user_workspaces', 'has_workspace_role',
             'is_workspace_admin', 'is_founder', 'get_founder_id')"""
    )
    assert len(wrappers) == 5
    for r in wrappers:
        assert not r["prosecdef"] and r["proconfig"] == ['search_path=""']
        assert f"authz.{r['proname']}(" in r["def"]


async def test_updated_at_trigger_on_every_table_with_the_column(conn):
    rows = await conn.fetch(
        """SELECT c.oid::regclass::text AS tbl,
                  EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
                          WHERE t.tgrelid = c.oid AND p.proname = 'set_updated_at'
                            AND NOT t.tgisinternal) AS has_trigger
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'updated_at'
           WHERE c.relkind = 'r' AND n.nspname = ANY($1::text[])""",
        SCHEMAS,
    )
    assert len(rows) >= 20
    assert [r["tbl"] for r in rows if not r["has_trigger"]] == []
    created = await conn.fetch(
        """SELECT c.oid::regclass::text FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'r' AND n.nspname = ANY($1::text[])
             AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                             AND a.attname IN ('created_at', 'recorded_at'))""",
        SCHEMAS,
    )
    assert created == []


async def test_updated_at_trigger_fires(conn):
    async def go():
        ws = await conn.fetchval("INSERT INTO core.workspaces (name) VALUES ('t') RETURNING id")
        await conn.execute(
            "UPDATE core.workspaces SET name = 'u', updated_at = '2000-01-01' WHERE id = $1", ws
        )
        assert await conn.fetchval(
            "SELECT updated_at > '2001-01-01' FROM core.workspaces WHERE id = $1", ws
        )

    await _rollback(conn, go)


async def test_tenant_tables_have_workspace_fk_cascade(conn):
    rows = await conn.fetch(
        """SELECT n.nspname AS schema, c.relname AS table, a.attnotnull,
                  EXISTS (
                    SELECT 1 FROM pg_constraint k
                    WHERE k.conrelid = c.oid AND k.contype = 'f'
                      AND k.confrelid = 'core.workspaces'::regclass
                      AND k.conkey = ARRAY[a.attnum] AND k.confdeltype = 'c'
                  ) AS fk_cascade
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'workspace_id'
           WHERE c.relkind = 'r' AND n.nspname = ANY($1::text[])""",
        SCHEMAS,
    )
    tenant = [r for r in rows if (r["schema"], r["table"]) not in NON_TENANT]
    assert len(tenant) == 25  # 005 added ops.sync_seen
    bad = [(r["schema"], r["table"]) for r in tenant if not (r["attnotnull"] and r["fk_cascade"])]
    assert bad == []
    # The exceptions are what docs/schema.md says they are.
    by = {(r["schema"], r["table"]): r for r in rows}
    assert by[("ops", "ingestion_jobs")]["fk_cascade"]
    assert not by[("ops", "ingestion_jobs")]["attnotnull"]
    assert not by[("ops", "events")]["fk_cascade"]


async def test_children_use_composite_fks(conn):
    """Every FK from a tenant table to another tenant table includes workspace_id."""
    rows = await conn.fetch(
        """SELECT k.conrelid::regclass::text AS child, k.confrelid::regclass::text AS parent,
                  (SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_attribute a
                   WHERE a.attrelid = k.conrelid AND a.attnum = ANY(k.conkey)) AS cols
           FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE k.contype = 'f' AND n.nspname = ANY($1::text[])
             AND k.confrelid <> 'core.workspaces'::regclass""",
        SCHEMAS,
    )
    assert len(rows) == 24
    system = {"ops.slow_query_reports"}
    for r in rows:
        if r["child"] in system:
            continue
        assert "workspace_id" in r["cols"] and len(r["cols"]) == 2, dict(r)


# --------------------------------------------------------------------------------------
# Event store, uniqueness, composite FKs (each in a rolled-back transaction)
# --------------------------------------------------------------------------------------


async def _new_event(conn, ws=None, key=None, agg=None, version=1, agg_type="communication"):
    return await conn.fetchval(
        """INSERT INTO ops.events (workspace_id, aggregate_type, aggregate_id, version,
                                   event_type, idempotency_key)
           VALUES ($1, $2, $3, $4, 'test.happened', $5) RETURNING id""",
        ws,
        agg_type,
        agg or uuid.uuid4(),
        version,
        key or uuid.uuid4().hex,
    )


@pytest.mark.parametrize("as_role", ["postgres", "service_role"])
@pytest.mark.parametrize(
    "stmt",
    [
        "UPDATE ops.events SET payload = '{\"x\": 1}'",
        "DELETE FROM ops.events",
        "TRUNCATE ops.events",
        "TRUNCATE ops.events CASCADE",
    ],
)
async def test_event_store_is_append_only(conn, as_role, stmt):
    tr = conn.transaction()
    await tr.start()
    try:
        ws = await conn.fetchval("INSERT INTO core.workspaces (name) VALUES ('e') RETURNING id")
        await _new_event(conn, ws)
        await conn.execute("SET LOCAL session_replication_role = replica")
        if as_role != "postgres":
            await conn.execute(f"SET LOCAL ROLE {as_role}")
        with pytest.raises(
            (asyncpg.RaiseError, asyncpg.InsufficientPrivilegeError),
        ) as exc:
            await conn.execute(stmt)
        if as_role == "postgres":
            assert "append-only" in str(exc.value)
    finally:
        await tr.rollback()


async def test_event_store_survives_workspace_deletion(conn):
    async def go():
        ws = await conn.fetchval("INSERT INTO core.workspaces (name) VALUES ('e') RETURNING id")
        eid = await _new_event(conn, ws)
        await conn.execute("DELETE FROM core.workspaces WHERE id = $1", ws)
        assert await conn.fetchval("SELECT count(*) FROM ops.events WHERE id = $1", eid) == 1

    await _rollback(conn, go)


async def test_event_uniques_and_checks(conn):
    agg = uuid.uuid4()

    async def dup_version():
        await _new_event(conn, agg=agg, agg_type="ingestion_job")
        await _new_event(conn, agg=agg, agg_type="ingestion_job")

    with pytest.raises(asyncpg.UniqueViolationError, match="events_aggregate_version_key"):
        await _rollback(conn, dup_version)

    async def dup_key():
        await _new_event(conn, key="k1", agg_type="maintenance_run")
        await _new_event(conn, key="k1", agg_type="maintenance_run")

    with pytest.raises(asyncpg.UniqueViolationError, match="idempotency_key"):
        await _rollback(conn, dup_key)

    async def no_workspace():
        await _new_event(conn, ws=None, agg_type="communication")

    with pytest.raises(asyncpg.CheckViolationError):
        await _rollback(conn, no_workspace)

    async def bad_version():
        await _new_event(conn, agg_type="maintenance_run", version=0)

    with pytest.raises(asyncpg.CheckViolationError):
        await _rollback(conn, bad_version)

    async def next_version():
        a = uuid.uuid4()
        assert await conn.fetchval("SELECT ops.next_event_version($1)", a) == 1
        await _new_event(conn, agg=a, agg_type="ingestion_job")
        assert await conn.fetchval("SELECT ops.next_event_version($1)", a) == 2

    await _rollback(conn, next_version)


async def test_ingestion_job_checks(conn):
    async def failed_unattributed():
        await conn.execute(
            "INSERT INTO ops.ingestion_jobs (id, status, last_error) VALUES ($1, 'failed', 'x')",
            uuid.uuid4(),
        )

    await _rollback(conn, failed_unattributed)

    async def queued_unattributed():
        await conn.execute(
            "INSERT INTO ops.ingestion_jobs (id, kind) VALUES ($1, 'communication')", uuid.uuid4()
        )

    with pytest.raises(asyncpg.CheckViolationError):
        await _rollback(conn, queued_unattributed)


async def test_chunk_time_checks(conn):
    async def go(start, end):
        ws = await conn.fetchval("INSERT INTO core.workspaces (name) VALUES ('c') RETURNING id")
        asset = await conn.fetchval(
            """INSERT INTO media.assets (workspace_id, source, external_id, kind, content_hash)
               VALUES ($1, 's', 'e', 'audio', 'h') RETURNING id""",
            ws,
        )
        await conn.execute(
            """INSERT INTO media.media_chunks (workspace_id, asset_id, chunk_index, start_ms,
                 end_ms, content, content_hash, token_count) VALUES ($1, $2, 0, $3, $4, 'x', 'h', 1)""",
            ws,
            asset,
            start,
            end,
        )

    await _rollback(conn, lambda: go(None, None))
    await _rollback(conn, lambda: go(0, 10))
    for start, end in [(-1, None), (10, 5)]:
        with pytest.raises(asyncpg.CheckViolationError):
            await _rollback(conn, lambda s=start, e=end: go(s, e))


@pytest.mark.parametrize(
    "child",
    ["comms.participants", "meetings.transcript_chunks", "media.media_chunks", "work.comments"],
)
async def test_composite_fk_refuses_cross_workspace_parent(conn, child):
    async def go():
        w1, w2 = [
            await conn.fetchval("INSERT INTO core.workspaces (name) VALUES ($1) RETURNING id", n)
            for n in ("w1", "w2")
        ]
        comm = await conn.fetchval(
            """INSERT INTO comms.communications (workspace_id, source, external_id, channel,
                 content_hash) VALUES ($1, 'gmail', 'm1', 'email', 'h') RETURNING id""",
            w2,
        )
        meeting = await conn.fetchval(
            """INSERT INTO meetings.meetings (workspace_id, source, external_id)
               VALUES ($1, 'zoom', 'z1') RETURNING id""",
            w2,
        )
        transcript = await conn.fetchval(
            """INSERT INTO meetings.transcripts (workspace_id, meeting_id, source, external_id,
                 content_hash) VALUES ($1, $2, 'zoom', 't1', 'h') RETURNING id""",
            w2,
            meeting,
        )
        asset = await conn.fetchval(
            """INSERT INTO media.assets (workspace_id, source, external_id, kind, content_hash)
               VALUES ($1, 's', 'a1', 'audio', 'h') RETURNING id""",
            w2,
        )
        item = await conn.fetchval(
            "INSERT INTO work.work_items (workspace_id, title) VALUES ($1, 'w') RETURNING id", w2
        )
        sql = {
            "comms.participants": (
                "INSERT INTO comms.participants (workspace_id, communication_id, role, address)"
                " VALUES ($1, $2, 'to', 'a@b.c')",
                comm,
            ),
            "meetings.transcript_chunks": (
                "INSERT INTO meetings.transcript_chunks (workspace_id, transcript_id, meeting_id,"
                " chunk_index, content, content_hash, token_count)"
                " VALUES ($1, $2, $3, (SELECT count(*) FROM meetings.transcript_chunks),"
                " 'x', 'h', 1)",
                transcript,
                meeting,
            ),
            "media.media_chunks": (
                "INSERT INTO media.media_chunks (workspace_id, asset_id, chunk_index, content,"
                " content_hash, token_count)"
                " VALUES ($1, $2, (SELECT count(*) FROM media.media_chunks), 'x', 'h', 1)",
                asset,
            ),
            "work.comments": (
                "INSERT INTO work.comments (workspace_id, work_item_id, body) VALUES ($1, $2, 'b')",
                item,
            ),
        }[child]
        # Same parent from its own workspace is fine ...
        await conn.execute(sql[0], w2, *sql[1:])
        # ... but a W1 child pointing at the W2 parent is refused, even for the superuser.
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(sql[0], w1, *sql[1:])

    await _rollback(conn, go)


async def test_workspace_delete_cascades(conn):
    async def go():
        ws = await conn.fetchval("INSERT INTO core.workspaces (name) VALUES ('d') RETURNING id")
        comm = await conn.fetchval(
            """INSERT INTO comms.communications (workspace_id, source, external_id, channel,
                 content_hash) VALUES ($1, 'gmail', 'm1', 'email', 'h') RETURNING id""",
            ws,
        )
        await conn.execute(
            """INSERT INTO comms.participants (workspace_id, communication_id, role, address)
               VALUES ($1, $2, 'from', 'a@b.c')""",
            ws,
            comm,
        )
        await conn.execute("DELETE FROM core.workspaces WHERE id = $1", ws)
        assert await conn.fetchval("SELECT count(*) FROM comms.participants") == 0

    await _rollback(conn, go)


async def test_seed_basic_operations_as_authenticated(conn):
    """Seed doc block 8: create a workspace, join it as owner, see only your own."""
    user = uuid.uuid4()

    async def go():
        await conn.execute("INSERT INTO core.workspaces (name) VALUES ('someone else')")
        await conn.execute("SET LOCAL ROLE authenticated")
        await conn.execute(
            "SELECT set_config('request.jwt.claims', $1, true)",
            f'{{"sub": "{user}", "role": "authenticated"}}',
        )
        ws = await conn.fetchval(
            "INSERT INTO core.workspaces (name) VALUES ('Test Workspace') RETURNING id"
        )
        await conn.execute(
            "INSERT INTO core.members (workspace_id, user_id, role) VALUES ($1, auth.uid(), 'owner')",
            ws,
        )
        rows = await conn.fetch("SELECT id, created_by FROM core.workspaces")
        assert [(r["id"], r["created_by"]) for r in rows] == [(ws, user)]
        founder = await conn.fetchval(
            """INSERT INTO core.founders (workspace_id, user_id, display_name, email)
               VALUES ($1, auth.uid(), 'Test Founder', 'test@example.com') RETURNING id""",
            ws,
        )
        assert await conn.fetchval("SELECT auth.get_founder_id($1)", ws) == founder
        assert await conn.fetchval("SELECT auth.is_founder($1)", ws)
        assert await conn.fetchval("SELECT auth.has_workspace_role($1, 'owner')", ws)
        # A second bootstrap (the workspace now has members) is refused for others.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "SELECT set_config('request.jwt.claims', $1, true)",
                f'{{"sub": "{uuid.uuid4()}", "role": "authenticated"}}',
            )
            await conn.execute(
                "INSERT INTO core.members (workspace_id, user_id, role)"
                " VALUES ($1, auth.uid(), 'owner')",
                ws,
            )

    await _rollback(conn, go)


async def test_bootstrap_refused_once_workspace_has_members(conn):
    creator, other = uuid.uuid4(), uuid.uuid4()

    async def go():
        ws = await conn.fetchval(
            "INSERT INTO core.workspaces (name, created_by) VALUES ('b', $1) RETURNING id", creator
        )
        await conn.execute(
            "INSERT INTO core.members (workspace_id, user_id, role) VALUES ($1, $2, 'owner')",
            ws,
            other,
        )
        await conn.execute("SET LOCAL ROLE authenticated")
        await conn.execute(
            "SELECT set_config('request.jwt.claims', $1, true)",
            f'{{"sub": "{creator}", "role": "authenticated"}}',
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO core.members (workspace_id, user_id, role)"
                " VALUES ($1, auth.uid(), 'owner')",
                ws,
            )

    await _rollback(conn, go)


# --------------------------------------------------------------------------------------
# Idempotency and reversibility
# --------------------------------------------------------------------------------------

SNAPSHOT_QUERIES = {
    "relations": """
        SELECT n.nspname, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity,
               c.reloptions::text, c.relacl::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY($1::text[])""",
    "columns": """
        SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, a.attidentity, a.attgenerated,
               pg_get_expr(d.adbin, d.adrelid), a.attacl::text
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = ANY($1::text[]) AND a.attnum > 0 AND NOT a.attisdropped""",
    "types": """
        SELECT n.nspname, t.typname, t.typtype,
               (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder)::text
                FROM pg_enum e WHERE e.enumtypid = t.oid)
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = ANY($1::text[]) AND t.typtype IN ('e', 'd', 'c')
          AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid)""",
    "indexes": """
        SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = ANY($1::text[])""",
    "constraints": """
        SELECT n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY($1::text[])""",
    "policies": """
        SELECT schemaname, tablename, policyname, permissive, roles::text, cmd, qual,
               with_check
        FROM pg_policies WHERE schemaname = ANY($1::text[])""",
    "functions": """
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),
               pg_get_function_result(p.oid), p.prosecdef, p.provolatile,
               p.proconfig::text, md5(p.prosrc), p.proacl::text
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY($1::text[])""",
    "triggers": """
        SELECT n.nspname, c.relname, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY($1::text[]) AND NOT t.tgisinternal""",
    "views": """
        SELECT n.nspname, c.relname, pg_get_viewdef(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY($1::text[]) AND c.relkind = 'v'""",
    "schemas": """
        SELECT nspname, nspacl::text FROM pg_namespace WHERE nspname = ANY($1::text[])""",
    "default_acl": """
        SELECT n.nspname, d.defaclobjtype, d.defaclacl::text
        FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace
        WHERE n.nspname = ANY($1::text[])""",
    "migrations": "SELECT version, name FROM public.schema_migrations WHERE $1::text[] IS NOT NULL",
}


async def snapshot(dsn: str) -> dict[str, list[tuple]]:
    c = await asyncpg.connect(dsn)
    try:
        out = {}
        for key, sql in SNAPSHOT_QUERIES.items():
            rows = await c.fetch(sql, [*SCHEMAS, "auth", "authz"])
            out[key] = sorted(tuple("" if v is None else str(v) for v in r) for r in rows)
        return out
    finally:
        await c.close()


async def test_applying_twice_changes_nothing(pg, new_database):
    dsn = new_database()
    apply(pg, dsn, *UP)
    once = await snapshot(dsn)
    apply(pg, dsn, UP[0], UP[0], UP[1], UP[1], UP[2], UP[0], UP[2], UP[3], UP[3], UP[4], UP[4])
    apply(pg, dsn, UP[5], UP[5], UP[6], UP[6])
    assert await snapshot(dsn) == once
    assert len(once["policies"]) >= 120
    assert len(once["indexes"]) >= 80


async def test_up_down_up_round_trip(pg, new_database):
    dsn = new_database()
    apply(pg, dsn, *UP)
    before = await snapshot(dsn)
    assert await search_function(dsn)
    ivf = {r[2]: r[3] for r in before["indexes"] if r[2] in QUANTIZED}
    assert len(ivf) == 3 and all(
        "USING ivfflat" in d and "binary_quantize" in d for d in ivf.values()
    )

    apply(pg, dsn, DOWN[0])  # 007: 006's binary-quantized HNSW and search_memory come back
    after_007_down = await snapshot(dsn)
    assert [r[0] for r in after_007_down["migrations"]] == [
        "001",
        "002",
        "003",
        "004",
        "005",
        "006",
    ]
    hnsw = {r[2]: r[3] for r in after_007_down["indexes"] if r[2] in QUANTIZED}
    assert len(hnsw) == 3 and all(
        "USING hnsw" in d and "binary_quantize" in d for d in hnsw.values()
    )
    assert not any(r[1].startswith("ivfflat_") for r in after_007_down["functions"])
    assert await search_runs(dsn)  # 006's body again: 007's calls ops.ivfflat_probes
    apply(pg, dsn, UP[6])
    assert await snapshot(dsn) == before
    apply(pg, dsn, DOWN[0])
    apply(pg, dsn, DOWN[0])  # idempotent

    apply(pg, dsn, DOWN[1])  # 006: the seed's vector indexes come back, the function goes
    after_006_down = await snapshot(dsn)
    assert [r[0] for r in after_006_down["migrations"]] == ["001", "002", "003", "004", "005"]
    seed_defs = {r[2]: r[3] for r in after_006_down["indexes"] if r[2] in HNSW}
    assert len(seed_defs) == 5
    assert all("USING hnsw (embedding vector_cosine_ops)" in d for d in seed_defs.values())
    fts = {r[2]: r[3] for r in after_006_down["indexes"] if r[2].endswith("_content_fts")}
    assert len(fts) == 2 and all("to_tsvector" in d for d in fts.values())
    assert not any(c[2] == "content_tsv" for c in after_006_down["columns"])
    assert not await search_function(dsn)
    apply(pg, dsn, UP[5])
    assert await snapshot(dsn) == after_007_down
    apply(pg, dsn, DOWN[1])

    apply(pg, dsn, DOWN[2])  # 005: the full-sync table
    after_005_down = await snapshot(dsn)
    assert [r[0] for r in after_005_down["migrations"]] == ["001", "002", "003", "004"]
    assert ("ops", "sync_seen") not in {r[:2] for r in after_005_down["relations"]}
    assert not any("sync_seen" in str(r) for r in after_005_down["policies"])
    apply(pg, dsn, UP[4])
    assert await snapshot(dsn) == after_006_down
    apply(pg, dsn, DOWN[2])

    apply(pg, dsn, DOWN[3])  # 004: the chunk position column
    after_004_down = await snapshot(dsn)
    assert [r[0] for r in after_004_down["migrations"]] == ["001", "002", "003"]
    assert ("media", "media_chunks", "metadata") not in {c[:3] for c in after_004_down["columns"]}
    apply(pg, dsn, UP[3])
    assert await snapshot(dsn) == after_005_down
    apply(pg, dsn, DOWN[3])

    apply(pg, dsn, DOWN[4])  # 003: only its row (002 creates the same layout now)
    after_003_down = await snapshot(dsn)
    assert [r[0] for r in after_003_down["migrations"]] == ["001", "002"]
    assert after_003_down["policies"] == after_005_down["policies"]

    apply(pg, dsn, DOWN[5])
    after_002_down = await snapshot(dsn)
    assert after_002_down["policies"] == []
    assert not any(r[3] == "True" for r in after_002_down["relations"])  # RLS off
    assert {r[1] for r in after_002_down["functions"] if r[0] == "auth"} == {"uid", "jwt", "role"}
    assert not any(r[0] == "authz" for r in after_002_down["functions"])
    assert {r[0] for r in after_002_down["schemas"]} == {*SCHEMAS, "auth"}
    assert [r[0] for r in after_002_down["migrations"]] == ["001"]

    apply(pg, dsn, DOWN[6])
    gone = await snapshot(dsn)
    assert {r[0] for r in gone["schemas"]} == {"auth"}
    assert gone["migrations"] == []
    # Down scripts are idempotent too.
    apply(pg, dsn, *DOWN)

    apply(pg, dsn, *UP)
    assert await snapshot(dsn) == before

    # and once more through 002 to 006 only
    apply(pg, dsn, *DOWN[:6], *UP[1:])
    assert await snapshot(dsn) == before


async def search_runs(dsn: str) -> bool:
    """public.search_memory runs (its body's references resolve) for a text query."""
    c = await asyncpg.connect(dsn)
    try:
        await c.fetch("SELECT * FROM public.search_memory(gen_random_uuid(), NULL, 'x')")
        return True
    finally:
        await c.close()


async def search_function(dsn: str) -> bool:
    """Whether public.search_memory exists (``public`` is outside the snapshot)."""
    c = await asyncpg.connect(dsn)
    try:
        n = await c.fetchval("SELECT count(*) FROM pg_proc WHERE proname = 'search_memory'")
        return bool(n)
    finally:
        await c.close()
