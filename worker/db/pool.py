"""The asyncpg pool every worker component shares.

Connections switch to ``settings.database_role`` (``service_role`` by default) at
connect time, so the worker's writes run under the backend role whatever login role
the DSN names, and the pgvector codec is registered so vectors travel in binary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any

import asyncpg
from pgvector.asyncpg import register_vector

from worker.core.settings import Settings
from worker.db.queries import Q


async def _init_connection(conn: asyncpg.Connection) -> None:
    schema = await conn.fetchval(Q.vector_schema)
    if schema is not None:
        await register_vector(conn, schema=schema)


def server_settings(settings: Settings) -> dict[str, str]:
    """Session settings applied to every connection (role, application name)."""
    values = {"application_name": "cos-worker"}
    if settings.database_role:
        values["role"] = settings.database_role
    return values


def _prepare_on_connect(
    statements: Sequence[str],
) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    """A connection init that also prepares ``statements`` once, so the connection learns
    the types they use (jsonb, arrays, enums, vectors) when it opens.

    Why: asyncpg looks up every type it has no codec for the first time a statement uses
    it, per connection: a catalog query each, ~50 ms per connection for the worker's
    statements, otherwise paid by the first burst on a CPU-bound event loop (and again
    by every connection opened later: on demand, or after a database restart).
    """

    async def init(conn: asyncpg.Connection) -> None:
        await _init_connection(conn)
        for sql in statements:
            await conn.prepare(sql)

    return init


def worker_statements() -> list[str]:
    """What the worker's pool prepares on each connection as it opens: the ingestion
    queries (``Q.plain()``), so asyncpg learns their types before the first burst.
    Not search: ingestion does not need 006's ``search_memory``, so a worker keeps
    running on a database where 006 was rolled back (or not applied yet)."""
    return [sql for sql in Q.plain() if sql != Q.search_memory]


async def create_pool(
    settings: Settings,
    dsn: str,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    prepare: Sequence[str] = (),
) -> asyncpg.Pool:
    """A pool with the pgvector codec and the service role on every connection; all of
    them opened now unless ``DB_POOL_MIN`` says fewer. Each connection prepares
    ``prepare`` when it opens (the worker's runtime passes its statements)."""
    max_size = max_size if max_size is not None else settings.db_pool_max
    if min_size is None:
        min_size = min(settings.db_pool_min or max_size, max_size)
    pool: Any = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_prepare_on_connect(prepare) if prepare else _init_connection,
        reset=_keep_session,
        server_settings=server_settings(settings),
        command_timeout=settings.job_timeout_s,
    )
    return pool


#: Set in a live item's run (``worker.core.priority``): its connections come from the
#: connections kept for live items (``reserve_for_live``), not from the back of a
#: backfill's queue of acquisitions.
LIVE_CONNECTIONS: ContextVar[bool] = ContextVar("live_connections", default=False)


class RoutedPool:
    """Two pools behind one: a live item's run (``LIVE_CONNECTIONS`` set in its task) gets
    its connections from ``live``, everything else from ``bulk``.

    Why: a live item acquires a connection in four stages (receive, pickup, vector reuse,
    write), each of them code shared with bulk items; under a backfill every one of those
    acquisitions waited for a group write of a hundred items to finish. The stages keep
    calling ``pool.acquire()`` (and ``pool.fetch`` and friends); the run's context decides
    which pool answers. Anything else is the pool of the current context's."""

    def __init__(self, bulk: asyncpg.Pool, live: asyncpg.Pool) -> None:
        self.bulk = bulk
        self.live = live

    def _current(self) -> asyncpg.Pool:
        return self.live if LIVE_CONNECTIONS.get() else self.bulk

    def acquire(self, *, timeout: float | None = None) -> Any:
        return self._current().acquire(timeout=timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._current(), name)

    async def close(self) -> None:
        await self.live.close()
        await self.bulk.close()


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
