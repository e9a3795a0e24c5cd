"""The worker's pool releases connections without asyncpg's reset query: what a pooled
connection must (and must not) carry from one job to the next, on a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncpg
import pytest

from worker.core.settings import Settings
from worker.db.migrate import Migrator
from worker.db.pool import create_pool
from worker.db.queries import Q

pytestmark = pytest.mark.asyncio


async def test_released_connection_keeps_role_and_drops_transaction_state(
    migrated_dsn: str,
) -> None:
    pool = await create_pool(
        Settings(database_url=migrated_dsn), migrated_dsn, min_size=1, max_size=1
    )
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            # What the pipeline leaves behind: transaction-scoped only.
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(42)")
                await conn.execute("CREATE TEMP TABLE scratch (x int) ON COMMIT DROP")
                await conn.execute("SET LOCAL statement_timeout = '1s'")
            # A transaction left open by mistake (not managed) is rolled back on release.
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE leaked (x int)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # the same session
            assert await conn.fetchval("SELECT current_user") == "service_role"
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('pg_temp.scratch')") is None
            assert await conn.fetchval("SELECT to_regclass('pg_temp.leaked')") is None
            assert await conn.fetchval("SHOW statement_timeout") == "0"
            held = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1", pid
            )
            assert held == 0
    finally:
        await pool.close()


async def test_pool_connections_cannot_leave_the_service_role(migrated_dsn: str) -> None:
    pool = await create_pool(
        Settings(database_url=migrated_dsn), migrated_dsn, min_size=1, max_size=1
    )
    try:
        async with pool.acquire() as conn:
            await conn.execute("RESET ALL")  # what the default reset would have run
            assert await conn.fetchval("SELECT current_user") == "service_role"
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("CREATE SCHEMA should_fail")
    finally:
        await pool.close()


async def test_all_connections_are_opened_at_startup_unless_db_pool_min_says_fewer(
    migrated_dsn: str,
) -> None:
    """Opened on demand, connections are opened when a burst arrives, on the event loop its
    first jobs wait for; by default the pool opens them all at once."""

    async def backends() -> int:
        conn = await asyncpg.connect(migrated_dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cos-worker' "
                    "AND datname = current_database()"
                )
            )
        finally:
            await conn.close()

    before = await backends()
    for env, opened in (({}, 5), ({"db_pool_min": 2}, 2)):
        settings = Settings(database_url=migrated_dsn, db_pool_max=5, **env)
        pool = await create_pool(settings, migrated_dsn)
        try:
            assert pool.get_size() == opened
            assert await backends() - before == opened
        finally:
            await pool.close()
    with pytest.raises(ValueError, match="DB_POOL_MIN"):
        Settings(db_pool_min=6, db_pool_max=5)


async def test_connections_learn_the_statements_types_when_they_open(
    new_database: Callable[[], str],
) -> None:
    """asyncpg looks up every type it has no codec for (one catalog query per connection)
    the first time a statement uses it; a pool that prepares them when each connection
    opens keeps those lookups out of the first burst."""
    dsn = new_database()
    await Migrator(dsn).up()
    settings = Settings(database_url=dsn, db_pool_max=3)

    async def introspections() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                    "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "AND query LIKE '%range_subtype%'"
                )
            )
        finally:
            await conn.close()

    async def first_burst(pool: asyncpg.Pool) -> int:
        """Type lookups made by what a page's items run first (pickups, reuse lookups), on
        each of DB_POOL_MAX connections; acquiring opens any that were not open yet."""
        conns = [await pool.acquire() for _ in range(3)]
        try:
            before = await introspections()
            for conn in conns:
                await conn.fetch(Q.ledger_start_page, [uuid.uuid4()], ["job"])
                await conn.fetch(Q.reuse_comm_embeddings, [uuid.uuid4()], ["h"], "m")
            return await introspections() - before
        finally:
            for conn in conns:
                await pool.release(conn)

    # A cold pool; a preparing pool with every connection opened at startup; and one whose
    # connections open on demand (DB_POOL_MIN=1): those prepare when they open.
    for prepare, min_size, expect_introspection in (
        ((), 3, True),
        (Q.plain(), 3, False),
        (Q.plain(), 1, False),
    ):
        pool = await create_pool(settings, dsn, min_size=min_size, prepare=prepare)
        try:
            assert pool.get_size() == min_size
            assert (await first_burst(pool) > 0) is expect_introspection
        finally:
            await pool.close()


async def test_a_live_run_gets_a_kept_connection_while_bulk_holds_every_other(
    migrated_dsn: str,
) -> None:
    import asyncio

    from worker.db.pool import LIVE_CONNECTIONS, RoutedPool

    settings = Settings(database_url=migrated_dsn)
    bulk = await create_pool(settings, migrated_dsn, min_size=1, max_size=1)
    live = await create_pool(settings, migrated_dsn, min_size=1, max_size=1)
    pool = RoutedPool(bulk, live)
    try:
        async with pool.acquire() as held:  # the backfill holds the only bulk connection
            waiting = asyncio.create_task(pool.fetchval("SELECT 1"))  # ... and bulk waits

            async def live_run() -> int:
                LIVE_CONNECTIONS.set(True)
                async with pool.acquire() as conn:
                    assert conn is not held
                    one = await conn.fetchval("SELECT 1")
                return int(one + await pool.fetchval("SELECT 2"))  # (Pool.fetch too)

            assert await asyncio.wait_for(live_run(), 10) == 3
            assert not waiting.done()
        assert await waiting == 1
    finally:
        await pool.close()


async def test_the_worker_pool_opens_where_006_was_rolled_back(
    new_database: Callable[[], str],
) -> None:
    """Ingestion does not need search: the statements every worker connection prepares
    leave ``search_memory`` out, so workers keep running while 006 is rolled back."""
    from worker.db.pool import worker_statements

    dsn = new_database()
    migrator = Migrator(dsn)
    await migrator.up()
    assert await migrator.down("005") == ["007", "006"]
    pool = await create_pool(
        Settings(database_url=dsn), dsn, min_size=1, max_size=1, prepare=worker_statements()
    )
    try:
        assert await pool.fetchval("SELECT count(*) FROM comms.communications") == 0
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await pool.fetch(Q.search_memory, uuid.uuid4(), None, "x", 5, *[None] * 5)
    finally:
        await pool.close()
