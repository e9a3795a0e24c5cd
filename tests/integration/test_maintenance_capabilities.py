"""Maintenance on a PostgreSQL 18 whose pg_stat_statements is installed but not preloaded,
as the superuser and as a login role that is not one (MAINTAIN decides there).

A server of its own: the session's server preloads the library, and unloading it takes a
restart. The extension is installed by migration 001 (the library is on disk, so
CREATE EXTENSION works), yet the view errors: "must be loaded via
shared_preload_libraries". The run must succeed and say so, whether it learns it from
the setting (superuser) or from the view's error (a role that may not read the setting).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest
from structlog.testing import capture_logs

from tests.support.servers import FAST_PG
from worker.core.settings import Settings
from worker.db.migrate import Migrator
from worker.maintenance import run_maintenance
from worker.servers.embedded import EmbeddedPostgres

READER = "maint_reader"


@pytest.fixture(scope="module")
def unloaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """PostgreSQL 18 without shared_preload_libraries, a migrated database ``cos``."""
    conf = {**FAST_PG, "shared_preload_libraries": "''"}
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg18_unloaded"), extra_conf=conf).start()
    try:

        async def setup() -> None:
            conn = await asyncpg.connect(server.dsn())
            try:
                await conn.execute("CREATE DATABASE cos")
            finally:
                await conn.close()
            await Migrator(server.dsn("cos")).up()

        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, setup()).result()
        yield server
    finally:
        server.stop(mode="immediate")


def settings() -> Settings:
    return Settings(maintenance_work_mem="64MB")


async def test_not_preloaded_known_from_the_setting(unloaded: EmbeddedPostgres) -> None:
    dsn = unloaded.dsn("cos")
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'"
        )
        with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError):
            await conn.fetch("SELECT * FROM pg_stat_statements LIMIT 1")
    finally:
        await conn.close()

    with capture_logs() as logs:
        report = await run_maintenance(settings(), dsn, force_analyze=True)

    assert report.status == "succeeded", report.to_dict()
    assert report.server["pg_stat_statements_preloaded"] is False
    assert report.server["maintain_privilege"] is True
    [slow] = report.actions_of("slow_queries")
    assert (slow.status, slow.reason) == ("skipped", "not_preloaded")
    source = report.slow_query_source
    assert source["available"] is False and source["reason"] == "not_preloaded"
    assert "not loaded" in source["explanation"] and "restart" in source["hint"]
    assert report.actions_of("analyze", "done") and not report.actions_of("analyze", "skipped")
    warned = [e for e in logs if e["event"] == "maintenance.pg_stat_statements_unavailable"]
    assert len(warned) == 1 and warned[0]["reason"] == "not_preloaded"


async def test_a_role_without_maintain_or_the_setting(unloaded: EmbeddedPostgres) -> None:
    """Not superuser: pg_settings hides shared_preload_libraries, so the scan finds out;
    MAINTAIN decides what it may ANALYZE (17+)."""
    admin = await asyncpg.connect(unloaded.dsn("cos"))
    table = f"work.maint_{uuid.uuid4().hex[:6]}"
    try:
        await admin.execute(f"CREATE ROLE {READER} LOGIN")
        # The bookkeeping connection SETs ROLE service_role; not inherited, or its grants
        # (ALL, MAINTAIN included on 17+, from migration 002) would let us ANALYZE anything.
        await admin.execute(f"GRANT service_role TO {READER} WITH INHERIT FALSE")
        await admin.execute(f"GRANT USAGE ON SCHEMA ops TO {READER}")
        await admin.execute(f"GRANT SELECT ON ops.index_builds TO {READER}")
        await admin.execute(f"CREATE TABLE {table} (id int)")
        await admin.execute(f"GRANT MAINTAIN ON {table} TO {READER}")
        await admin.execute(f"CREATE TABLE {table}_other (id int)")
        await admin.execute(f"GRANT MAINTAIN ON {table}_other TO {READER}")
    finally:
        await admin.close()

    with capture_logs() as logs:
        report = await run_maintenance(
            settings(), unloaded.dsn("cos", user=READER), force_analyze=True
        )

    assert report.status == "succeeded", [a for a in report.actions if a.status == "failed"]
    assert report.server["superuser"] is False
    assert report.server["pg_stat_statements_preloaded"] is None  # could not read it
    [slow] = report.actions_of("slow_queries")
    assert (slow.status, slow.reason) == ("skipped", "not_preloaded")
    assert report.slow_query_source["reason"] == "not_preloaded"
    # MAINTAIN without USAGE on the schema: it cannot name the tables; said, not failed.
    assert not report.actions_of("analyze", "done")
    skipped = {a.target: a.reason for a in report.actions_of("analyze", "skipped")}
    assert skipped[table] == skipped[f"{table}_other"] == "no_schema_usage"
    assert any(e["event"] == "maintenance.pg_stat_statements_unavailable" for e in logs)

    admin = await asyncpg.connect(unloaded.dsn("cos"))
    try:
        await admin.execute(f"GRANT USAGE ON SCHEMA work TO {READER}")
        await admin.execute(f"REVOKE MAINTAIN ON {table}_other FROM {READER}")
    finally:
        await admin.close()
    report = await run_maintenance(settings(), unloaded.dsn("cos", user=READER), force_analyze=True)
    assert report.status == "succeeded", [a for a in report.actions if a.status == "failed"]
    assert {a.target for a in report.actions_of("analyze", "done")} == {table}
    denied = report.actions_of("analyze", "skipped")
    assert len(denied) > 20 and {a.reason for a in denied} == {"no_maintain_privilege"}
    assert "pg_maintain" in denied[0].details["why"]
    assert any(w.startswith(f"skipped {len(denied)} action(s)") for w in report.warnings)
