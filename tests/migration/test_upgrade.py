"""A database migrated by the released 002 (RLS helpers in schema auth) moves to the
layout 002 creates now (helpers in schema authz, policies calling them, wrappers in auth)
through 003, by the runner and by psql, keeping every row and isolating workspaces.

``released/`` holds 001 and 002 as they were released (``a842d65``); their checksums are
the ones the runner accepts as superseded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg

from tests.migration.test_rls import OUTSIDER, OWNER, W1, W2, become, seed_workspace
from tests.migration.test_schema import TABLES, UP, apply, snapshot
from worker.core.settings import REPO_ROOT
from worker.db.migrate import SUPERSEDED, Migrator, file_checksum

MIGRATIONS = REPO_ROOT / "migrations"
RELEASED = Path(__file__).parent / "released"
RELEASED_001 = RELEASED / "001_initial_schema.sql"
RELEASED_002 = RELEASED / "002_rls_policies.sql"
HELPERS = ["user_workspaces", "has_workspace_role", "is_workspace_admin", "is_founder"]
HELPERS.append("get_founder_id")
MEMBERS = [(W1, OWNER, "owner"), (W2, OUTSIDER, "owner")]


def test_the_released_files_are_the_superseded_ones() -> None:
    for released in (RELEASED_001, RELEASED_002):
        version = released.name[:3]
        assert file_checksum(released) in SUPERSEDED[version]
        assert file_checksum(MIGRATIONS / released.name) not in SUPERSEDED[version]


async def _seed(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await seed_workspace(conn, W1, OWNER)
        await seed_workspace(conn, W2, OUTSIDER)
        for ws, user, role in MEMBERS:
            await conn.execute(
                "INSERT INTO core.members (workspace_id, user_id, role) VALUES ($1, $2, $3)",
                ws,
                user,
                role,
            )
    finally:
        await conn.close()


#: Tables a later migration adds (absent from the released 002 database being upgraded).
LATER_TABLES = {("ops", "sync_seen")}


# 006 rebuilds the three bulk-written vector indexes and records each in ops.index_builds
REBUILT = {"ops.index_builds": 3}


async def _counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            f"{s}.{t}": await conn.fetchval(f"SELECT count(*) FROM {s}.{t}")
            for s, t in TABLES
            if (s, t) not in LATER_TABLES
        }
    finally:
        await conn.close()


async def _policies_calling(dsn: str, schema: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        pattern = rf"\m{schema}\.({'|'.join(HELPERS)})\("
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_policies WHERE coalesce(qual, '') ~ $1"
                " OR coalesce(with_check, '') ~ $1",
                pattern,
            )
        )
    finally:
        await conn.close()


async def _visible_workspaces(dsn: str, who: str) -> set[object]:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await become(conn, who)
            rows = await conn.fetch(
                "SELECT workspace_id FROM comms.communications UNION "
                "SELECT workspace_id FROM meetings.transcript_chunks UNION "
                "SELECT id FROM core.workspaces"
            )
        return {r[0] for r in rows}
    finally:
        await conn.close()


async def _assert_new_layout(dsn: str, fresh: dict[str, list[tuple]]) -> None:
    assert await _policies_calling(dsn, "auth") == 0
    assert await _policies_calling(dsn, "authz") > 0
    moved = await snapshot(dsn)
    # the same policies, functions and grants as a database 002 builds now
    for key in ("policies", "functions", "relations", "schemas"):
        assert moved[key] == fresh[key], key
    assert await _visible_workspaces(dsn, "owner") == {W1}
    assert await _visible_workspaces(dsn, "outsider") == {W2}


async def test_the_runner_moves_a_released_002_database_forward(
    pg, new_database, tmp_path: Path
) -> None:
    fresh_dsn = new_database()
    apply(pg, fresh_dsn, *UP)
    fresh = await snapshot(fresh_dsn)

    released = tmp_path / "released"
    released.mkdir()
    shutil.copy(RELEASED_001, released)
    shutil.copy(RELEASED_002, released)
    dsn = new_database()
    assert await Migrator(dsn, released).up() == ["001", "002"]
    await _seed(dsn)
    before = await _counts(dsn)
    assert await _policies_calling(dsn, "auth") > 0  # the released layout
    assert await _visible_workspaces(dsn, "owner") == {W1}

    migrator = Migrator(dsn)
    assert {s.version: s.state for s in await migrator.status()} == {
        "001": "applied",  # superseded, not drift
        "002": "applied",
        "003": "pending",
        "004": "pending",
        "005": "pending",
        "006": "pending",
        "007": "pending",
    }
    assert await migrator.up() == ["003", "004", "005", "006", "007"]
    assert await migrator.up() == []
    assert {s.state for s in await migrator.status()} == {"applied"}
    assert await _counts(dsn) == before | REBUILT
    await _assert_new_layout(dsn, fresh)


async def test_psql_moves_a_released_002_database_forward(pg, new_database) -> None:
    fresh_dsn = new_database()
    apply(pg, fresh_dsn, *UP)
    fresh = await snapshot(fresh_dsn)

    dsn = new_database()
    apply(pg, dsn, RELEASED_001, RELEASED_002)
    await _seed(dsn)
    before = await _counts(dsn)
    apply(pg, dsn, MIGRATIONS / "003_helpers_out_of_auth.sql")
    apply(pg, dsn, MIGRATIONS / "003_helpers_out_of_auth.sql")  # idempotent
    apply(pg, dsn, MIGRATIONS / "004_document_chunks.sql")
    apply(pg, dsn, MIGRATIONS / "005_sync_seen.sql")
    apply(pg, dsn, MIGRATIONS / "006_vector_search.sql")
    apply(pg, dsn, MIGRATIONS / "006_vector_search.sql")  # idempotent
    apply(pg, dsn, MIGRATIONS / "007_ivfflat_vectors.sql")
    apply(pg, dsn, MIGRATIONS / "007_ivfflat_vectors.sql")  # idempotent
    assert await _counts(dsn) == before | REBUILT
    await _assert_new_layout(dsn, fresh)
