"""The worker's pool releases connections without asyncpg's reset query: what a pooled
connection must (and must not) carry from one job to the next, on a real PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from worker.db import create_pool
from worker.settings import Settings

pytestmark = pytest.mark.asyncio


async def test_released_connection_keeps_role_and_drops_transaction_state(
    migrated_dsn: str,
) -> None:
    pool = await create_pool(Settings(database_url=migrated_dsn), migrated_dsn, min_size=1,
                             max_size=1)  # fmt: skip
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
    pool = await create_pool(Settings(database_url=migrated_dsn), migrated_dsn, min_size=1,
                             max_size=1)  # fmt: skip
    try:
        async with pool.acquire() as conn:
            await conn.execute("RESET ALL")  # what the default reset would have run
            assert await conn.fetchval("SELECT current_user") == "service_role"
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("CREATE SCHEMA should_fail")
    finally:
        await pool.close()
