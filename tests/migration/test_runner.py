"""The migration runner against a real server: apply, re-apply, race, drift, psql."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import run_sql
from worker.core.settings import REPO_ROOT
from worker.db.migrate import MigrationError, Migrator, discover
from worker.servers.embedded import EmbeddedPostgres

MIGRATIONS = REPO_ROOT / "migrations"
VERSIONS = ["001", "002", "003", "004", "005", "006", "007"]
CATALOG = """
SELECT n.nspname || '.' || c.relname || ':' || c.relkind::text AS obj
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('core','ops','comms','meetings','media','work','intel')
UNION ALL
SELECT 'policy:' || schemaname || '.' || tablename || '.' || policyname FROM pg_policies
ORDER BY 1
"""


async def _fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


def _psql(pg: EmbeddedPostgres, dsn: str, path: Path) -> None:
    subprocess.run(
        [str(pg.psql_path()), dsn, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(path)],
        check=True,
        capture_output=True,
    )


async def test_discover_finds_versions_and_rollbacks() -> None:
    files = discover(MIGRATIONS)
    assert [f.version for f in files] == VERSIONS
    assert all(f.down_path is not None for f in files)


async def test_up_twice_changes_nothing(new_database) -> None:
    dsn = new_database()
    migrator = Migrator(dsn)
    assert await migrator.up() == VERSIONS
    before = await _fetch(dsn, CATALOG)
    assert await migrator.up() == []
    assert await _fetch(dsn, CATALOG) == before
    rows = await _fetch(dsn, "SELECT version, checksum FROM public.schema_migrations ORDER BY 1")
    assert [r["version"] for r in rows] == VERSIONS
    assert all(r["checksum"] for r in rows)
    assert {s.state for s in await migrator.status()} == {"applied"}


async def test_psql_twice_then_runner_adopts(pg: EmbeddedPostgres, new_database) -> None:
    dsn = new_database()
    for _ in range(2):
        for mf in discover(MIGRATIONS):
            await asyncio.to_thread(_psql, pg, dsn, mf.path)
    rows = await _fetch(dsn, "SELECT version, checksum FROM public.schema_migrations ORDER BY 1")
    assert [(r["version"], r["checksum"]) for r in rows] == [
        ("001", None),
        ("002", None),
        ("003", None),
        ("004", None),
        ("005", None),
        ("006", None),
        ("007", None),
    ]
    before = await _fetch(dsn, CATALOG)
    assert await Migrator(dsn).up() == []
    assert await _fetch(dsn, CATALOG) == before
    rows = await _fetch(dsn, "SELECT checksum FROM public.schema_migrations")
    assert all(r["checksum"] for r in rows)


async def test_racing_migrators_apply_each_file_once(new_database) -> None:
    dsn = new_database()
    results = await asyncio.gather(*(Migrator(dsn).up() for _ in range(4)))
    applied = [v for r in results for v in r]
    assert sorted(applied) == VERSIONS
    rows = await _fetch(dsn, "SELECT count(*) AS n FROM public.schema_migrations")
    assert rows[0]["n"] == len(VERSIONS)


async def test_checksum_drift_is_a_clear_error(new_database, tmp_path: Path) -> None:
    dsn = new_database()
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy)
    await Migrator(dsn, copy).up()
    target = copy / "002_rls_policies.sql"
    target.write_text(target.read_text() + "\n-- an edit after release\n")
    with pytest.raises(MigrationError, match="002_rls_policies.*must not change"):
        await Migrator(dsn, copy).up()
    states = {s.version: s.state for s in await Migrator(dsn, copy).status()}
    assert states == {
        "001": "applied",
        "002": "drifted",
        "003": "applied",
        "004": "applied",
        "005": "applied",
        "006": "applied",
        "007": "applied",
    }


async def test_down_and_up_again(new_database) -> None:
    dsn = new_database()
    migrator = Migrator(dsn)
    await migrator.up()
    before = await _fetch(dsn, CATALOG)
    assert await migrator.down("001") == ["007", "006", "005", "004", "003", "002"]
    policies = await _fetch(dsn, "SELECT count(*) AS n FROM pg_policies")
    assert policies[0]["n"] == 0
    assert await migrator.down("0") == ["001"]
    left = await _fetch(dsn, CATALOG)
    assert left == []
    assert await migrator.up() == VERSIONS
    assert await _fetch(dsn, CATALOG) == before


async def test_failed_file_rolls_back_and_reports(new_database, tmp_path: Path) -> None:
    dsn = new_database()
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy)
    (copy / "099_broken.sql").write_text(
        "BEGIN;\nCREATE TABLE core.half_done (id int);\nSELECT 1/0;\nCOMMIT;\n"
    )
    with pytest.raises(MigrationError, match="099_broken failed"):
        await Migrator(dsn, copy).up()
    rows = await _fetch(dsn, "SELECT to_regclass('core.half_done') IS NULL AS gone")
    assert rows[0]["gone"]
    versions = await _fetch(dsn, "SELECT version FROM public.schema_migrations ORDER BY 1")
    assert [r["version"] for r in versions] == VERSIONS


def test_cli_exits_nonzero_on_drift(pg: EmbeddedPostgres, new_database, tmp_path: Path) -> None:
    dsn = new_database()
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy)
    env = {"DATABASE_URL": dsn, "MIGRATIONS_DIR": str(copy), "PATH": "/usr/bin:/bin"}
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", "migrate", *args],
            env=env,
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
        )

    up = run("up")
    assert up.returncode == 0, up.stderr
    assert "001" in up.stdout and "applied" in up.stdout
    (copy / "001_initial_schema.sql").write_text("-- changed\n")
    drift = run("up")
    assert drift.returncode == 2
    assert "must not change" in drift.stderr


async def test_an_owner_that_is_not_a_superuser_migrates(pg: EmbeddedPostgres) -> None:
    """The database's owner runs the migrations; a superuser installed vector (not a trusted
    extension) beforehand, pg_stat_statements is available but not installed: 001 skips
    it with a warning instead of failing."""
    role, db = f"owner_{uuid.uuid4().hex[:8]}", f"t_{uuid.uuid4().hex[:12]}"
    run_sql(pg.dsn(), f'CREATE ROLE "{role}" LOGIN CREATEDB')
    run_sql(pg.dsn(), f'CREATE DATABASE "{db}" OWNER "{role}" TEMPLATE template0')
    run_sql(pg.dsn(db), "CREATE EXTENSION vector")
    try:
        migrator = Migrator(pg.dsn(db, user=role))
        assert await migrator.up() == VERSIONS
        assert await migrator.up() == []
        rows = await _fetch(pg.dsn(db), "SELECT extname FROM pg_extension ORDER BY 1")
        assert "pg_stat_statements" not in {r["extname"] for r in rows}
        owners = await _fetch(
            pg.dsn(db),
            "SELECT DISTINCT pg_get_userbyid(relowner) AS owner FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'core'",
        )
        assert [r["owner"] for r in owners] == [role]
    finally:
        run_sql(pg.dsn(), f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        run_sql(pg.dsn(), f'DROP ROLE IF EXISTS "{role}"')
