"""The asyncpg pool every worker component shares.

Connections switch to ``settings.database_role`` (``service_role`` by default) at
connect time, so the worker's writes run under the backend role whatever login role
the DSN names, and the pgvector codec is registered so vectors travel in binary.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import asyncpg
from pgvector.asyncpg import register_vector

from worker.settings import Settings

VECTOR_SCHEMA_QUERY = """
SELECT n.nspname
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'vector'
"""


async def _init_connection(conn: asyncpg.Connection) -> None:
    schema = await conn.fetchval(VECTOR_SCHEMA_QUERY)
    if schema is not None:
        await register_vector(conn, schema=schema)


def server_settings(settings: Settings) -> dict[str, str]:
    """Session settings applied to every connection (role, application name)."""
    values = {"application_name": "cos-worker"}
    if settings.database_role:
        values["role"] = settings.database_role
    return values


async def create_pool(
    settings: Settings, dsn: str, *, min_size: int | None = None, max_size: int | None = None
) -> asyncpg.Pool:
    """A pool with the pgvector codec and the service role on every connection; all of
    them opened now unless ``DB_POOL_MIN`` says fewer."""
    max_size = max_size if max_size is not None else settings.db_pool_max
    if min_size is None:
        min_size = min(settings.db_pool_min or max_size, max_size)
    pool: Any = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        server_settings=server_settings(settings),
        command_timeout=settings.job_timeout_s,
    )
    return pool


async def warm_statements(pool: asyncpg.Pool, statements: Iterable[str]) -> int:
    """Prepare ``statements`` once on every open pool connection, so each connection
    learns the types they use (jsonb, arrays, vectors) now, not in the first burst.

    Why: asyncpg introspects every type it has no codec for the first time a statement
    uses it, per connection: one catalog query each, ~50 ms per connection for the
    worker's statements, paid by the first jobs on a CPU-bound event loop. Returns how
    many statements each connection prepared.
    """
    sqls = list(statements)
    conns = [await pool.acquire() for _ in range(pool.get_size())]
    try:
        await asyncio.gather(*(_prepare_all(conn, sqls) for conn in conns))
    finally:
        for conn in conns:
            await pool.release(conn)
    return len(sqls)


async def _prepare_all(conn: asyncpg.Connection, sqls: list[str]) -> None:
    for sql in sqls:
        await conn.prepare(sql)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's default reset query (advisory unlock all, CLOSE ALL,
    UNLISTEN *, RESET ALL): one round trip per release, three per ingested item.

    Pool connections carry only what ``_init_connection`` set (the service role, which
    RESET ALL keeps anyway, and codecs); everything the worker does on them is
    transaction-scoped (``pg_advisory_xact_lock``, ``ON COMMIT DROP`` temp tables, no
    session ``SET``, no LISTEN). Session-level work (maintenance, migrations) uses
    dedicated connections. asyncpg still rolls back a transaction left open.
    """


async def connect(settings: Settings, dsn: str, *, as_role: bool = True) -> asyncpg.Connection:
    """A single connection (CLI commands, migrations); ``as_role=False`` keeps the login role."""
    conn = await asyncpg.connect(
        dsn,
        server_settings=server_settings(settings)
        if as_role
        else {"application_name": "cos-worker"},
    )
    await _init_connection(conn)
    return conn
